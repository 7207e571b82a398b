"""The CLI tests that talk to nodes use the real nodes of the RPC tests (:mod:`tests.rpc.nodes`)."""

from tests.rpc.nodes import nodes

__all__ = ["nodes"]
