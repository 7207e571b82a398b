"""The test kit: in-process networks, a hand-driven peer over real NATS, and the replay checker."""

from parley.testing.mock import (
    FlowHospitalized,
    FlowStillRunning,
    MockFlowHandle,
    MockNetwork,
    MockNode,
    Transfer,
)
from parley.testing.peer import HandPeer
from parley.testing.replay import ReplayReport, replay_database
from parley.testing.restarts import RestartRun, RestartRunFailed, restart_at_every_step

__all__ = [
    "FlowHospitalized",
    "FlowStillRunning",
    "HandPeer",
    "MockFlowHandle",
    "MockNetwork",
    "MockNode",
    "ReplayReport",
    "RestartRun",
    "RestartRunFailed",
    "Transfer",
    "replay_database",
    "restart_at_every_step",
]
