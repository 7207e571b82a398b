"""The error the NATS bridge reports, whichever of its parts failed."""

from __future__ import annotations

from parley.protocol.errors import ParleyError

__all__ = ["MessagingError"]


class MessagingError(ParleyError):
    """The NATS bridge could not connect, set up JetStream, or publish."""
