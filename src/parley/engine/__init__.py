"""The flow engine every host shares: MockNetwork runs it in-process, a node on its workers.

:class:`~parley.engine.driver.FlowDriver` runs one flow (its mailbox, transitions, actions and
coroutine); :class:`~parley.engine.runtime.FlowRuntime` hosts many drivers and connects them to
the world through ports; the hospital's policy, flow handles and ids, the outbox that turns sends
into messages, timers and the per-flow log context live here too. Nothing here imports pykka or
NATS.
"""

from parley.engine.driver import FlowDriver, FlowHost
from parley.engine.handles import FlowHandle
from parley.engine.hospital import Hospital, HospitalPort
from parley.engine.runtime import FlowRuntime, RuntimePorts

__all__ = [
    "FlowDriver",
    "FlowHandle",
    "FlowHost",
    "FlowRuntime",
    "Hospital",
    "HospitalPort",
    "RuntimePorts",
]
