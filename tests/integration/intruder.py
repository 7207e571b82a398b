"""An intruder: a raw nats-py client that publishes whatever bytes on whatever subject.

It uses nothing of Parley's messaging (no name checks, no signing of its own unless asked), the
way a hostile client would, and reads a node's consumer state to check that nothing is left
un-acked.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats

T = TypeVar("T")


class Intruder:
    """A NATS client on its own loop thread; every method blocks until done."""

    def __init__(self, url: str, **connect_options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc: Any = self._run(nats.connect(url, **connect_options))
        self._js: Any = self._nc.jetstream()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def publish(
        self,
        subject: str,
        data: bytes,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish to JetStream and wait for the stream's ack."""
        self.publish_many([(subject, data, msg_id, headers)])

    def publish_many(
        self, messages: Sequence[tuple[str, bytes, str | None, dict[str, str] | None]]
    ) -> None:
        async def go() -> None:
            futures = []
            for subject, data, msg_id, headers in messages:
                all_headers = dict(headers or {})
                if msg_id is not None:
                    all_headers["Nats-Msg-Id"] = msg_id
                futures.append(
                    await self._js.publish_async(subject, data, headers=all_headers or None)
                )
            await asyncio.gather(*futures)

        self._run(go(), timeout=120)

    def consumer_state(self, node: str) -> tuple[int, int]:
        """``(num_ack_pending, num_pending)`` of ``node``'s consumer."""

        async def go() -> tuple[int, int]:
            info = await self._js.consumer_info(f"PARLEY_{node}", f"parley-{node}")
            return int(info.num_ack_pending), int(info.num_pending)

        return self._run(go())

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
