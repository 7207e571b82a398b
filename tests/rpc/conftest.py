"""The RPC tests run against real nodes (:mod:`tests.rpc.nodes`)."""

from tests.rpc.nodes import nodes

__all__ = ["nodes"]
