"""A timer thread: runs callbacks at wall-clock times (durable sleeps, hospital backoff).

One thread for the whole node, whatever the number of timers: a heap ordered by due time and a
condition variable. Callbacks run on the timer thread and must only hand work to an actor.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger("parley.timers")


class TimerService:
    """Call functions at given times, from one background thread."""

    def __init__(self, name: str = "parley-timers") -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, when: datetime, fn: Callable[[], None]) -> None:
        """Run ``fn`` at ``when`` (at once if it is past)."""
        with self._cond:
            heapq.heappush(self._heap, (when.timestamp(), next(self._seq), fn))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        delay = self._heap[0][0] - datetime.now(UTC).timestamp()
                        if delay <= 0:
                            break
                        self._cond.wait(delay)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")


__all__ = ["TimerService"]
