"""Testing support: MockNetwork runs nodes in-process on an in-memory network."""

from parley.testing.mock import FlowStillRunning, MockFlowHandle, MockNetwork, MockNode, Transfer
from parley.testing.peer import HandPeer

__all__ = ["FlowStillRunning", "HandPeer", "MockFlowHandle", "MockNetwork", "MockNode", "Transfer"]
