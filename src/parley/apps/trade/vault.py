"""The vault: a node's states and transactions, written only through the flow's database.

Rules:

* Writes go through ``services.db.execute``: they are queued and commit atomically with the
  flow's next checkpoint, or not at all (a flow that fails, or a node that dies before the
  checkpoint, leaves the vault as it was, and a flow retried from its last checkpoint writes them
  again). Reads go through ``services.db.query``: recorded in the flow's journal, so a replay
  sees the same rows.
* :class:`VaultTable` offers sqlite-utils' own table methods (``insert``, ``upsert``,
  ``insert_all``, ``delete_where``, ``rows_where``) with the same arguments. Each call runs
  sqlite-utils against the thread's schema-only shadow database (:func:`schema.shadow`), inside
  a transaction that is always rolled back, and captures what sqlite-utils executed with its
  tracer hook: the write statements are queued with ``services.db.execute``, a query is run with
  ``services.db.query`` and its rows turned into dicts. The dry run builds the statement exactly
  as sqlite-utils would (quoting, JSON for lists and dicts, ``ON CONFLICT`` for upserts) and
  checks the row against the real schema (STRICT types, NOT NULL, unknown columns) before
  anything is queued. What it can't check is what depends on the node's rows (a primary key
  already taken): that surfaces when the checkpoint commits, and the flow hospital retries the
  flow from its last checkpoint (see the notary, :mod:`parley.apps.trade.notary`).
* Methods that read rows before writing (``update``, ``lookup``, ``insert(alter=True)``) would
  read the empty shadow: they are not offered.
* None of this is on the checkpoint path: it runs in the flow's own code, between suspensions,
  and the node commits plain SQL strings with their parameters (``bench/trade.py`` measures
  both).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlite_utils.db import Table

from parley import FlowLogic
from parley.apps.trade.schema import shadow
from parley.apps.trade.states import (
    Cash,
    CommercialPaper,
    SignedTransaction,
    State,
    StateAndRef,
    StateRef,
    TransactionSignature,
    kind_of,
    transaction_from_bytes,
)

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class _Discard(Exception):
    """Raised inside the dry run's transaction so that it is rolled back."""


def dry_run(table: str, operation: Callable[[Table], object]) -> list[tuple[str, tuple[Any, ...]]]:
    """What sqlite-utils executes for ``operation`` on ``table``: ``(sql, params)`` in order,
    without the reads it makes of the schema (``sqlite_master``, ``PRAGMA``)."""
    db = shadow()
    executed: list[tuple[str, tuple[Any, ...]]] = []

    def trace(sql: str, params: Sequence[Any] | dict[str, Any] | None) -> None:
        if isinstance(params, dict):
            raise ValueError("named parameters are not supported by the vault")
        executed.append((sql, tuple(params) if params is not None else ()))

    try:
        with db.tracer(trace), db.atomic():
            result = operation(db.table(table))
            if isinstance(result, Iterator):  # rows_where is lazy: make it run its query
                list(result)
            raise _Discard
    except _Discard:
        pass
    return [(sql, p) for sql, p in executed if "sqlite_master" not in sql and "PRAGMA" not in sql]


class VaultTable:
    """One app table, with sqlite-utils' methods, written with the flow's next checkpoint."""

    def __init__(self, flow: FlowLogic[Any], name: str) -> None:
        self.flow, self.name = flow, name

    def _queue(self, operation: Callable[[Table], object]) -> None:
        for sql, params in dry_run(self.name, operation):
            if sql.lstrip().upper().startswith(_WRITES):
                self.flow.services.db.execute(sql, params)

    def insert(self, record: dict[str, Any], **options: Any) -> None:
        """``Table.insert(record, **options)``, queued (``ignore=True``: INSERT OR IGNORE)."""
        self._queue(lambda t: t.insert(record, **options))

    def insert_all(self, records: Iterable[dict[str, Any]], **options: Any) -> None:
        """``Table.insert_all(records, **options)``, queued."""
        rows = list(records)
        if rows:
            self._queue(lambda t: t.insert_all(rows, **options))

    def upsert(self, record: dict[str, Any], *, pk: str | tuple[str, ...], **options: Any) -> None:
        """``Table.upsert(record, pk=pk, **options)``, queued."""
        self._queue(lambda t: t.upsert(record, pk=pk, **options))

    def delete_where(self, where: str, where_args: Sequence[Any] = ()) -> None:
        """``Table.delete_where(where, where_args)``, queued."""
        self._queue(lambda t: t.delete_where(where, list(where_args)))

    async def rows_where(
        self, where: str | None = None, where_args: Sequence[Any] = (), **options: Any
    ) -> list[dict[str, Any]]:
        """``Table.rows_where(where, where_args, **options)`` against committed data (recorded)."""
        ((sql, params),) = dry_run(self.name, lambda t: t.rows_where(where, where_args, **options))
        columns = [d[0] for d in shadow().conn.execute(sql, params).description]
        rows = await self.flow.services.db.query(sql, params)
        return [dict(zip(columns, row, strict=True)) for row in rows]


def _state_row(item: StateAndRef, now: str) -> dict[str, Any]:
    state, ref = item.state, item.ref
    amount = state.amount if isinstance(state, Cash) else state.face_value
    maturity = state.maturity.isoformat() if isinstance(state, CommercialPaper) else None
    return {
        "ref": str(ref),
        "tx_id": ref.txhash,
        "idx": ref.index,
        "kind": kind_of(state),
        "owner": state.owner,
        "issuer": state.issuer,
        "currency": state.currency,
        "amount": str(amount),
        "maturity": maturity,
        "recorded_at": now,
    }


def _transaction_row(stx: SignedTransaction, now: str) -> dict[str, Any]:
    signatures = [[s.by, s.signature.hex()] for s in stx.signatures]
    # sqlite-utils stores the list as JSON text
    return {"id": stx.id, "body": stx.tx.canonical, "signatures": signatures, "recorded_at": now}


def _signed_transaction(row: dict[str, Any]) -> SignedTransaction:
    signatures = json.loads(row["signatures"])
    return SignedTransaction(
        transaction_from_bytes(row["body"]),
        tuple(TransactionSignature(by, bytes.fromhex(sig)) for by, sig in signatures),
    )


class Vault:
    """A flow's view of its node's vault: what it owns, what it has recorded."""

    def __init__(self, flow: FlowLogic[Any]) -> None:
        self.flow = flow
        self.transactions = VaultTable(flow, "vault_transactions")
        self.states = VaultTable(flow, "vault_states")
        self.consumed = VaultTable(flow, "vault_consumed")

    # ---- reads ------------------------------------------------------------------------------
    async def unconsumed(self, kind: str, currency: str | None = None) -> list[StateAndRef]:
        """The node's unconsumed states of ``kind`` (and ``currency``), oldest first."""
        where = "kind = ? AND ref NOT IN (SELECT ref FROM vault_consumed)"
        args: list[Any] = [kind]
        if currency is not None:
            where, args = where + " AND currency = ?", [*args, currency]
        rows = await self.states.rows_where(where, args, order_by="recorded_at, ref")
        refs = [StateRef.parse(row["ref"]) for row in rows]
        found = await self.load({ref.txhash for ref in refs})
        return [StateAndRef(found[ref.txhash].tx.outputs[ref.index], ref) for ref in refs]

    async def unconsumed_state(self, ref: StateRef) -> StateAndRef | None:
        """The node's unconsumed state at ``ref``, if it has one."""
        rows = await self.states.rows_where(
            "ref = ? AND ref NOT IN (SELECT ref FROM vault_consumed)", [str(ref)], select="ref"
        )
        if not rows:
            return None
        (stx,) = (await self.load({ref.txhash})).values()
        return StateAndRef(stx.tx.outputs[ref.index], ref)

    async def load(self, tx_ids: Iterable[str]) -> dict[str, SignedTransaction]:
        """The recorded transactions among ``tx_ids``, by id."""
        wanted = sorted(set(tx_ids))
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = await self.transactions.rows_where(f"id IN ({marks})", wanted)
        return {row["id"]: _signed_transaction(row) for row in rows}

    async def history(self, refs: Iterable[StateRef]) -> list[SignedTransaction]:
        """Every recorded transaction that ``refs`` come from, and their ancestors: what a
        counterparty needs to verify the states (see ``contracts.verify_chain``)."""
        found: dict[str, SignedTransaction] = {}
        wanted = {ref.txhash for ref in refs}
        while wanted:
            loaded = await self.load(wanted)
            if set(loaded) != wanted:
                missing = sorted(wanted - set(loaded))
                raise LookupError(f"the vault lacks transactions {missing}")
            found.update(loaded)
            wanted = {r.txhash for stx in loaded.values() for r in stx.tx.inputs} - set(found)
        return list(found.values())

    async def cash_balance(self, currency: str) -> Decimal:
        """The total of the node's unconsumed cash in ``currency``."""
        return total(s.state for s in await self.unconsumed("Cash", currency))

    # ---- writes (commit with the flow's next checkpoint) --------------------------------------
    def record(self, stx: SignedTransaction, history: Iterable[SignedTransaction] = ()) -> None:
        """Record a finished transaction and the ``history`` it was verified with; its outputs
        this node owns as unconsumed, the states of ours it spends as consumed. Recording again
        changes nothing."""
        now = self.flow.now().isoformat()
        me = self.flow.our_identity
        ancestors = {ancestor.id: ancestor for ancestor in history}
        rows = [_transaction_row(ancestor, now) for ancestor in ancestors.values()]
        self.transactions.insert_all([*rows, _transaction_row(stx, now)], ignore=True)
        mine = [item for item in stx.tx.out_refs() if item.state.owner == me]
        self.states.insert_all([_state_row(item, now) for item in mine], ignore=True)
        spent = [
            {"ref": str(ref), "consumed_by": stx.id, "consumed_at": now}
            for ref in stx.tx.inputs
            if ref.txhash in ancestors and ancestors[ref.txhash].tx.outputs[ref.index].owner == me
        ]
        self.consumed.insert_all(spent, ignore=True)


def total(states: Iterable[State]) -> Decimal:
    """The sum of the cash among ``states``."""
    return sum((s.amount for s in states if isinstance(s, Cash)), Decimal(0))


__all__ = ["Vault", "VaultTable", "dry_run", "total"]
