"""The ledger's pieces on their own: transaction ids, contracts, the vault's tables and rows."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import cbor2
import pytest
from sqlite_utils import Database

from parley.apps.trade import MIGRATIONS, TransactionVerificationException
from parley.apps.trade.contracts import check_signatures, verify_chain, verify_contracts
from parley.apps.trade.schema import SCHEMA
from parley.apps.trade.states import (
    Cash,
    Command,
    CommercialPaper,
    SignedTransaction,
    StateRef,
    TimeWindow,
    Transaction,
    TransactionSignature,
    signed_bytes,
    transaction_from_bytes,
)
from parley.apps.trade.vault import dry_run
from parley.identity.keys import KeyPair, verify
from parley.testing import MockNetwork

MATURITY = datetime(2027, 1, 1, tzinfo=UTC)
REF = StateRef("ab" * 32, 0)
PAPER = CommercialPaper(Decimal(1100), "USD", MATURITY, "seller", "seller")


def cash(amount: int, owner: str = "buyer", issuer: str = "bank") -> Cash:
    return Cash(Decimal(amount), "USD", owner, issuer)


def move(
    inputs: int = 1, outputs: tuple[Cash | CommercialPaper, ...] = (), signers: tuple[str, ...] = ()
) -> Transaction:
    return Transaction(
        inputs=tuple(StateRef("cd" * 32, i) for i in range(inputs)),
        outputs=outputs,
        commands=(Command("cash.move", signers or ("buyer",)),),
        notary="notary",
        time_window=TimeWindow(None, MATURITY),
        salt="s",
    )


TX = move(1, (cash(60, "seller"), cash(40)))


def test_a_transaction_id_is_the_sha256_of_its_canonical_cbor_encoding() -> None:
    assert TX.id == hashlib.sha256(TX.canonical).hexdigest()
    assert cbor2.dumps(cbor2.loads(TX.canonical), canonical=True) == TX.canonical
    assert transaction_from_bytes(TX.canonical) == TX


@pytest.mark.parametrize(
    "changed",
    [
        replace(TX, inputs=(StateRef("cd" * 32, 1),)),
        replace(TX, outputs=(cash(60, "seller"), cash(40, issuer="other"))),
        replace(TX, outputs=(cash(60, "seller"), Cash(Decimal("40.0"), "USD", "buyer", "bank"))),
        replace(TX, commands=(Command("cash.move", ("seller",)),)),
        replace(TX, notary="other"),
        replace(TX, time_window=None),
        replace(TX, salt="t"),
    ],
)
def test_any_change_to_a_transaction_changes_its_id(changed: Transaction) -> None:
    assert changed.id != TX.id


def test_bytes_that_are_not_a_canonical_transaction_are_refused() -> None:
    # The same 7-item array, its header written in two bytes: valid CBOR, but not canonical.
    longer = b"\x98\x07" + TX.canonical[1:]
    assert cbor2.loads(longer) == cbor2.loads(TX.canonical)
    with pytest.raises(ValueError, match="not in canonical form"):
        transaction_from_bytes(longer)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Cash(Decimal(-1), "USD", "a", "b"), "positive"),
        (lambda: Cash(Decimal("NaN"), "USD", "a", "b"), "positive"),
        (lambda: Cash(10, "USD", "a", "b"), "Decimal"),  # type: ignore[arg-type]
        (lambda: CommercialPaper(Decimal(1), "USD", datetime(2027, 1, 1), "a", "b"), "aware"),
        (lambda: StateRef("zz", 0), "64 hex"),
        (lambda: Command("cash.print", ("a",)), "unknown command"),
        (lambda: replace(TX, inputs=[REF]), "tuple"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_state_or_transaction_cannot_be_built(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("tx", "inputs", "message"),
    [
        (move(1, (cash(60, "seller"), cash(41))), [cash(100)], "cash in and out differ"),
        (move(1, (cash(100, "seller"),)), [cash(100, "other")], "without its owner's signature"),
        (move(1, (cash(100, issuer="fake"),)), [cash(100)], "cash in and out differ"),
        (
            replace(move(0, (cash(5),)), commands=(Command("cash.issue", ("buyer",)),)),
            [],
            "without its issuer's signature",
        ),
        (replace(move(2, (cash(2),)), inputs=(REF, REF)), [cash(1), cash(1)], "appears twice"),
        (move(1, (cash(100),)), [PAPER], "CommercialPaper states with no CommercialPaper command"),
        (
            replace(
                move(1, (replace(PAPER, owner="buyer", face_value=Decimal(1)),)),
                commands=(Command("paper.move", ("seller",)),),
            ),
            [PAPER],
            "may change only its owner",
        ),
    ],
)
def test_a_transaction_that_breaks_a_contract_is_refused(
    tx: Transaction, inputs: list[Cash | CommercialPaper], message: str
) -> None:
    with pytest.raises(TransactionVerificationException, match=message) as refused:
        verify_contracts(tx, inputs)
    assert refused.value.tx_id == tx.id


def test_a_valid_move_passes_the_contracts() -> None:
    verify_contracts(TX, [cash(100)])


KEYS = {name: KeyPair.generate() for name in ("buyer", "seller", "notary", "bank")}


def by_map(node: str, data: bytes, signature: bytes) -> bool:
    return node in KEYS and verify(KEYS[node].public_key, data, signature)


def signed(tx: Transaction, *names: str) -> SignedTransaction:
    return SignedTransaction(
        tx, tuple(TransactionSignature(n, KEYS[n].sign(signed_bytes(tx.id))) for n in names)
    )


def test_signatures_are_checked_and_missing_ones_named() -> None:
    check_signatures(signed(TX, "buyer", "notary"), by_map)
    with pytest.raises(
        TransactionVerificationException, match=r"missing signatures of \['notary'\]"
    ):
        check_signatures(signed(TX, "buyer"), by_map)
    check_signatures(signed(TX, "buyer"), by_map, allowed_missing={"notary"})
    forged = SignedTransaction(TX, (TransactionSignature("buyer", KEYS["seller"].sign(b"x")),))
    with pytest.raises(TransactionVerificationException, match="buyer does not verify"):
        check_signatures(forged, by_map, allowed_missing={"notary"})
    with pytest.raises(TransactionVerificationException, match="not a required signer"):
        check_signatures(signed(TX, "buyer", "notary", "bank"), by_map)


def test_a_history_must_reach_back_to_valid_issues() -> None:
    issue = Transaction((), (cash(100),), (Command("cash.issue", ("bank",)),), "notary", None, "i")
    spend = replace(TX, inputs=(StateRef(issue.id, 0),))
    history = [signed(issue, "bank")]
    assert verify_chain(signed(spend, "buyer", "notary"), history, by_map) == {issue.id: history[0]}
    with pytest.raises(TransactionVerificationException, match="the history lacks transaction"):
        verify_chain(signed(spend, "buyer", "notary"), [], by_map)
    with pytest.raises(TransactionVerificationException, match="missing signatures of"):
        verify_chain(signed(spend, "buyer", "notary"), [signed(issue)], by_map)
    other_notary = replace(issue, notary="other")
    spend_other = replace(spend, inputs=(StateRef(other_notary.id, 0),))
    with pytest.raises(TransactionVerificationException, match="notarised by other"):
        verify_chain(signed(spend_other, "buyer", "notary"), [signed(other_notary, "bank")], by_map)


def test_the_migrations_make_the_schema_sqlite_utils_makes() -> None:
    direct = Database(sqlite3.connect(":memory:"), execute_plugins=False)
    SCHEMA.apply(direct)
    direct.table("_sqlite_migrations").drop()
    node = MockNetwork().create_node("n", apps=["parley.apps.trade"])
    names = ("vault_transactions", "vault_states", "vault_consumed", "notary_commits", "trade_bids")
    for name in names:
        (ours,) = node.store.query("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
        assert ours[0] == direct.table(name).schema
    assert len(MIGRATIONS) == 2
    indexes = node.store.query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql NOT NULL"
    )
    assert ("idx_vault_states_kind_currency",) in indexes


def test_a_vault_write_is_the_statement_sqlite_utils_builds_and_nothing_stays_in_the_shadow() -> (
    None
):
    row = {"seller": "s", "asset": "CommercialPaper", "currency": "USD"}
    row |= {"max_price": "10", "placed_at": "t"}
    assert dry_run("trade_bids", lambda t: t.upsert(row, pk=("seller", "asset"))) == [
        (
            'INSERT INTO "trade_bids" ("asset", "currency", "max_price", "placed_at", "seller") '
            'VALUES (?, ?, ?, ?, ?) ON CONFLICT("seller", "asset") DO UPDATE SET '
            '"currency" = excluded."currency", "max_price" = excluded."max_price", '
            '"placed_at" = excluded."placed_at"',
            ("CommercialPaper", "USD", "10", "t", "s"),
        )
    ]
    assert dry_run("trade_bids", lambda t: list(t.rows_where())) == [
        ('select * from "trade_bids"', ())
    ]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"ref": "r", "consumed_by": b"x", "consumed_at": "t"}, "cannot store BLOB value in TEXT"),
        ({"ref": "r", "consumed_at": "t"}, "NOT NULL constraint failed"),
        ({"ref": "r", "consumed_by": "x", "consumed_at": "t", "extra": 1}, "no column named extra"),
    ],
)
def test_a_row_that_does_not_fit_the_table_is_refused_before_anything_is_queued(
    row: dict[str, object], error: str
) -> None:
    with pytest.raises(sqlite3.Error, match=error):
        dry_run("vault_consumed", lambda t: t.insert(row))
