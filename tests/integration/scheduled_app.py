"""An app with a ``@scheduled`` flow, for the schedule tests (loaded with ``--app``)."""

from __future__ import annotations

from parley import FlowLogic, scheduled

MIGRATIONS = ["CREATE TABLE heartbeats (at TEXT NOT NULL, flow TEXT NOT NULL)"]


@scheduled(every=0.2, name="heartbeat", missed="catch_up")
class Heartbeat(FlowLogic[None]):
    """Writes one row per run (a side effect that must happen once per tick), then finishes."""

    async def call(self) -> None:
        row = (self.now().isoformat(), self.flow_id)
        self.services.db.execute("INSERT INTO heartbeats VALUES (?, ?)", row)
        await self.sleep(0.05)
