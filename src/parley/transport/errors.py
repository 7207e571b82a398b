"""The error the NATS bridge reports, whichever of its parts failed."""

from __future__ import annotations

from parley.protocol.errors import TransientError

__all__ = ["MessagingError"]


class MessagingError(TransientError):
    """The NATS bridge could not connect, set up JetStream, or publish (the hospital retries a
    flow whose publish failed a few times, with a backoff)."""
