"""NATS: the node's JetStream bridge, the routing of inbound messages, an embedded nats-server."""

from parley.transport.bridge import MessagingError, NatsBridge
from parley.transport.natsserver import EmbeddedNatsServer, NatsServerError
from parley.transport.router import SessionRouter

__all__ = ["EmbeddedNatsServer", "MessagingError", "NatsBridge", "NatsServerError", "SessionRouter"]
