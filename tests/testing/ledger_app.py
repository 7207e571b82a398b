"""A tiny app with its own table, for the MockNetwork tests: MIGRATIONS and a flow that writes."""

from __future__ import annotations

from parley import FlowLogic

MIGRATIONS = [
    "CREATE TABLE ledger (who TEXT NOT NULL, amount INTEGER NOT NULL)",
    "ALTER TABLE ledger ADD COLUMN note TEXT",
]


class Record(FlowLogic[int]):
    """Writes one row, then reads how many there are."""

    def __init__(self, who: str, amount: int) -> None:
        self.who, self.amount = who, amount

    async def call(self) -> int:
        self.services.db.execute(
            "INSERT INTO ledger (who, amount, note) VALUES (?, ?, 'mock')", (self.who, self.amount)
        )
        await self.sleep(1)
        rows = await self.services.db.query("SELECT count(*) FROM ledger")
        (count,) = rows[0]
        assert isinstance(count, int)
        return count
