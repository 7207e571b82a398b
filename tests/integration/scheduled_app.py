"""An app with a ``@scheduled`` flow, for the schedule tests (loaded with ``--app``)."""

from __future__ import annotations

from parley import FlowLogic, scheduled

MIGRATIONS = ["CREATE TABLE heartbeats (at TEXT NOT NULL)"]


@scheduled(every=0.2, name="heartbeat", missed="skip")
class Heartbeat(FlowLogic[None]):
    async def call(self) -> None:
        self.services.db.execute("INSERT INTO heartbeats VALUES (?)", (self.now().isoformat(),))
        await self.sleep(0)
