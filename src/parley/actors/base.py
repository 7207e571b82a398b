"""The base of Parley's actors: pykka's ThreadingActor with a lighter inbox.

pykka's default inbox is a ``queue.Queue`` (a lock and three condition variables, in Python);
``queue.SimpleQueue`` is implemented in C and satisfies pykka's ``ActorInbox`` protocol
(``put``/``get``/``empty``). Every message of the hot path crosses one or two inboxes.
"""

from __future__ import annotations

import queue
from typing import Any

import pykka


class Actor(pykka.ThreadingActor):
    """A pykka ThreadingActor whose inbox is a ``queue.SimpleQueue``."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


__all__ = ["Actor"]
