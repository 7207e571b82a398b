"""The two-party trade on MockNetwork: the happy path, the refusals, and the notary."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from parley import FlowException, FlowLogic, ProgressChange
from parley.apps.trade import (
    AssetMismatchException,
    Buyer,
    Finality,
    InsufficientBalanceException,
    IssueCash,
    Notarise,
    NotaryException,
    PlaceBid,
    Seller,
    SignedTransaction,
    Transaction,
    TransactionVerificationException,
    UnacceptablePriceException,
    Vault,
)
from parley.apps.trade.states import Cash, signed_bytes
from parley.testing import MockNetwork
from tests.apps.trading import (
    BID,
    CASH,
    FACE_VALUE,
    PRICE,
    cash_everywhere,
    consumed,
    market,
    notary_commits,
    spend_again,
    transactions,
    unconsumed,
)


def test_a_trade_moves_the_paper_to_the_buyer_and_the_price_to_the_seller() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()

    assert unconsumed(m.seller) == [("Cash", "seller", "buyer", str(PRICE), trade_id)]
    assert unconsumed(m.buyer) == [
        ("Cash", "buyer", "buyer", str(CASH - PRICE), trade_id),
        ("CommercialPaper", "buyer", "seller", str(FACE_VALUE), trade_id),
    ]
    assert consumed(m.seller) == [(m.paper_ref, trade_id)]
    assert consumed(m.buyer) == [(f"{m.cash_tx}:0", trade_id)]
    # Each party keeps the trade and its whole history; the notary keeps only what it committed.
    assert (
        transactions(m.seller) == transactions(m.buyer) == sorted([m.paper_tx, m.cash_tx, trade_id])
    )
    assert transactions(m.notary) == []
    assert unconsumed(m.notary) == []
    assert notary_commits(m.notary) == sorted(
        [(f"{m.cash_tx}:0", trade_id, "buyer"), (m.paper_ref, trade_id, "buyer")]
    )
    assert m.buyer.store.query("SELECT count(*) FROM trade_bids") == [(0,)]
    assert cash_everywhere(m.net) == CASH
    assert [n.flows() for n in (m.seller, m.buyer, m.notary)] == [[], [], []]
    (buyer_outcome,) = [v for ok, v in m.buyer.outcomes.values() if ok and v == trade_id]
    assert buyer_outcome == trade_id


def test_every_signature_on_the_recorded_trade_verifies_against_the_network_map() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()
    (stx,) = m.seller.start_flow(LoadTransaction(trade_id)).result()
    assert sorted(s.by for s in stx.signatures) == ["buyer", "notary", "seller"]
    for signature in stx.signatures:
        key = m.net.key_of(signature.by)
        assert key.sign(signed_bytes(trade_id)) == signature.signature  # Ed25519 is deterministic


class LoadTransaction(FlowLogic[list[SignedTransaction]]):
    """Read one recorded transaction from the node's vault."""

    def __init__(self, tx_id: str) -> None:
        self.tx_id = tx_id

    async def call(self) -> list[SignedTransaction]:
        return list((await Vault(self).load([self.tx_id])).values())


def test_the_seller_and_buyer_report_their_steps_and_their_sub_flows_steps() -> None:
    m = market(MockNetwork())
    handle = m.sell()
    assert handle.progress is not None
    seen: list[str] = []
    tracker = handle.progress

    def on_change(change: ProgressChange) -> None:
        if change.kind == "position":
            seen.append(tracker.current_label() or "")

    tracker.subscribe(on_change)
    buyer_steps: list[str] = []
    while not handle.done:
        m.net.run_network(max_steps=1)
        for summary in m.buyer.flows():
            if summary.progress_step and summary.progress_step not in buyer_steps:
                buyer_steps.append(summary.progress_step)
    handle.result()
    assert seen[:2] == [
        "Awaiting transaction proposal",
        "Verifying and signing transaction proposal",
    ]
    assert "Verifying and signing transaction proposal / Signing transaction proposal" in seen
    assert seen[-1] == "Done"
    assert buyer_steps[0] == "Waiting for seller trading info"
    assert (
        "Collecting signatures from other parties / Collecting signatures from counterparties"
        in buyer_steps
    )
    assert (
        "Recording completed transaction / Requesting signature by notary service"
        " / Requesting signature by notary service"
    ) in buyer_steps


def test_a_price_above_the_bid_is_refused_by_the_buyer_and_nothing_moves() -> None:
    m = market(MockNetwork(), bid=BID)
    with pytest.raises(UnacceptablePriceException) as refused:
        m.sell(price=BID + 1).result()
    assert refused.value.given_price == BID + 1
    assert refused.value.peer == "buyer"
    assert str(refused.value) == "1001 USD is more than the bid of 1000 USD"
    assert unconsumed(m.seller) == [
        ("CommercialPaper", "seller", "seller", str(FACE_VALUE), m.paper_tx)
    ]
    assert unconsumed(m.buyer) == [("Cash", "buyer", "buyer", str(CASH), m.cash_tx)]
    assert notary_commits(m.notary) == []
    assert m.buyer.store.query("SELECT count(*) FROM trade_bids") == [(1,)]


def test_an_asset_of_another_kind_than_the_bid_is_refused() -> None:
    net = MockNetwork()
    m = market(net)
    cash_of_seller = m.seller.start_flow(IssueCashTo()).result()
    with pytest.raises(AssetMismatchException) as refused:
        m.sell(asset_ref=f"{cash_of_seller}:0").result()
    assert (refused.value.expected_type, refused.value.type_name) == ("CommercialPaper", "Cash")
    assert notary_commits(m.notary) == []
    assert unconsumed(m.buyer) == [("Cash", "buyer", "buyer", str(CASH), m.cash_tx)]


class IssueCashTo(FlowLogic[str]):
    """The seller issues itself some cash, to offer it where paper is wanted."""

    async def call(self) -> str:
        return await self.sub_flow(IssueCash("5", "USD", "notary"))


def test_a_buyer_without_the_cash_refuses_before_anything_is_signed() -> None:
    net = MockNetwork()
    m = market(net, bid=Decimal(5000))
    with pytest.raises(InsufficientBalanceException) as refused:
        m.sell(price=Decimal(2000)).result()
    assert refused.value.missing == Decimal(500)
    assert notary_commits(m.notary) == []


def test_a_bid_for_cash_is_refused_when_placed() -> None:
    # the buyer pays in cash: a cash-for-cash trade would carry cash.move twice, which the
    # contract refuses, so it is refused up front rather than failing the Buyer mid-trade
    with pytest.raises(ValueError, match="an asset is one of"):
        PlaceBid("seller", "Cash", Decimal(100), "USD")


def test_a_state_already_sold_is_not_offered_again() -> None:
    m = market(MockNetwork())
    m.sell().result()
    with pytest.raises(FlowException, match="seller has no unconsumed state"):
        m.sell().result()
    assert m.net.transfers_between("seller", "buyer")[-1].message.__class__.__name__ == "End"


class DoubleSpend(FlowLogic[str]):
    """Spend a state this node already spent, as a buggy or dishonest client could."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    async def call(self) -> str:
        stx, parent = await spend_again(self, self.ref)
        return (await self.sub_flow(Finality(stx, [], (parent,)))).id


def test_a_double_spend_is_refused_by_the_notary_naming_the_transaction_that_spent_it() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()
    cash_ref = f"{m.cash_tx}:0"
    with pytest.raises(NotaryException) as refused:
        m.buyer.start_flow(DoubleSpend(cash_ref)).result()
    assert refused.value.conflicting_tx == trade_id
    assert refused.value.ref == cash_ref
    assert refused.value.peer == "notary"
    assert str(refused.value) == f"input {cash_ref} was consumed by transaction {trade_id}"
    assert notary_commits(m.notary) == sorted(
        [(cash_ref, trade_id, "buyer"), (m.paper_ref, trade_id, "buyer")]
    )
    assert len(transactions(m.buyer)) == 3  # the refused transaction is not recorded
    assert cash_everywhere(m.net) == CASH


def test_the_notary_signs_the_same_transaction_again_without_calling_it_a_double_spend() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()
    (stx,) = m.buyer.start_flow(LoadTransaction(trade_id)).result()
    unnotarised = SignedTransaction(stx.tx, tuple(s for s in stx.signatures if s.by != "notary"))
    again = m.buyer.start_flow(NotariseOnly(unnotarised)).result()
    assert again.signatures == unnotarised.signatures + tuple(
        s for s in stx.signatures if s.by == "notary"
    )
    assert len(notary_commits(m.notary)) == 2


class NotariseOnly(FlowLogic[SignedTransaction]):
    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx

    async def call(self) -> SignedTransaction:
        return await self.sub_flow(Notarise(self.stx))


def tampered(stx: SignedTransaction, seller: str) -> SignedTransaction:
    """``stx`` paying ``seller`` 100 less and its payer 100 more, with the old signatures."""
    outputs = list(stx.tx.outputs)
    paid = next(i for i, s in enumerate(outputs) if isinstance(s, Cash) and s.owner == seller)
    change = next(i for i, s in enumerate(outputs) if isinstance(s, Cash) and s.owner != seller)
    hundred = Decimal(100)
    for index, delta in ((paid, -hundred), (change, hundred)):
        cash = outputs[index]
        assert isinstance(cash, Cash)
        outputs[index] = Cash(cash.amount + delta, cash.currency, cash.owner, cash.issuer)
    return SignedTransaction(replace(stx.tx, outputs=tuple(outputs)), stx.signatures)


class Tamperer(Buyer):
    """A buyer that changes its proposal after signing it."""

    def sign(self, tx: Transaction) -> SignedTransaction:
        return tampered(super().sign(tx), self.session.counterparty)


def test_a_transaction_changed_after_it_was_signed_is_refused_by_the_seller() -> None:
    m = market(MockNetwork())
    m.buyer.registry.register(Seller, Tamperer)
    with pytest.raises(TransactionVerificationException) as refused:
        m.sell().result()
    assert str(refused.value).endswith("the signature of buyer does not verify")
    (buyer_error,) = [v for ok, v in m.buyer.outcomes.values() if not ok]
    assert isinstance(buyer_error, TransactionVerificationException)
    assert buyer_error.peer == "seller"
    assert notary_commits(m.notary) == []
    assert unconsumed(m.seller) == [
        ("CommercialPaper", "seller", "seller", str(FACE_VALUE), m.paper_tx)
    ]
    assert cash_everywhere(m.net) == CASH


def test_a_transaction_changed_after_it_was_signed_is_refused_by_the_notary() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()
    (stx,) = m.buyer.start_flow(LoadTransaction(trade_id)).result()
    forged = tampered(
        SignedTransaction(stx.tx, tuple(s for s in stx.signatures if s.by != "notary")), "seller"
    )
    with pytest.raises(NotaryException, match="the signature of buyer does not verify"):
        m.buyer.start_flow(NotariseOnly(forged)).result()
    assert len(notary_commits(m.notary)) == 2


def test_the_signatures_of_a_revoked_node_no_longer_verify() -> None:
    m = market(MockNetwork())
    m.net.revoked.add("buyer")
    with pytest.raises(TransactionVerificationException) as refused:
        m.sell().result()
    # The buyer's cash was issued (and signed) by the buyer: its history no longer verifies.
    assert refused.value.tx_id == m.cash_tx
    assert str(refused.value).endswith("the signature of buyer does not verify")
    assert notary_commits(m.notary) == []
