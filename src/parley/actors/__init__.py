"""The node's pykka actors: FlowWorker shards, Persistence, FlowManager and the Hospital.

Each actor owns one resource and talks to the others by messages; none blocks on another. The flow
engine they host is :mod:`parley.engine`; the NATS side is :mod:`parley.transport`; the node
(:mod:`parley.node`) wires them together.
"""

from parley.actors.hospital import ActorHospital, HospitalActor
from parley.actors.manager import FlowManager
from parley.actors.persistence import Persistence
from parley.actors.worker import FlowWorker

__all__ = ["ActorHospital", "FlowManager", "FlowWorker", "HospitalActor", "Persistence"]
