"""Testing support: MockNetwork runs nodes in-process on an in-memory network."""

from parley.testing.mock import FlowStillRunning, MockFlowHandle, MockNetwork, MockNode, Transfer

__all__ = ["FlowStillRunning", "MockFlowHandle", "MockNetwork", "MockNode", "Transfer"]
