"""Faults at the end of the two-party trade (``parley.apps.trade``): the notary refuses a double
spend, and the seller's commit that records the finished trade fails.

Every node keeps its database in a file (``MockNetwork(data_dir=...)``).

Left out:

* A finality-specific hospital rule (keeping a receiving flow for observation when the trade
  it records fails, or when its session ends early inside finality): Parley's hospital treats
  every flow alike, so an error reaching the receiver of a finished trade fails it like any other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parley import FlowLogic, UnexpectedFlowEndException
from parley.apps.trade import (
    Notarise,
    NotaryException,
)
from parley.testing import MockNetwork
from tests.apps.trading import CASH, PRICE, Market, cash_everywhere, market, spend_again, unconsumed


class SpendsBehindTheVault(FlowLogic[str]):
    """Has the notary commit a spend of ``ref`` without recording it (a buggy client could)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    async def call(self) -> str:
        stx, _ = await spend_again(self, self.ref)
        return (await self.sub_flow(Notarise(stx))).tx.id


def test_a_double_spend_refused_at_finality_fails_the_waiting_seller_without_a_hospital_stay(
    tmp_path: Path,
) -> None:
    m = market(MockNetwork(data_dir=tmp_path))
    m.buyer.start_flow(SpendsBehindTheVault(f"{m.cash_tx}:0")).result()
    seller_before, buyer_before = unconsumed(m.seller), unconsumed(m.buyer)
    with pytest.raises(UnexpectedFlowEndException) as ended:
        m.sell().result()
    assert ended.value.peer == "buyer"  # the notary's refusal is the buyer's, not revealed
    buyer_outcomes = [error for ok, error in m.buyer.outcomes.values() if not ok]
    assert len(buyer_outcomes) == 1
    assert isinstance(buyer_outcomes[0], NotaryException)
    assert [(r.staff, r.outcome) for r in m.seller.hospital.records] == [("general", "propagate")]
    assert unconsumed(m.seller) == seller_before
    assert unconsumed(m.buyer) == buyer_before
    assert [n.flows() for n in (m.seller, m.buyer, m.notary)] == [[], [], []]
    assert all(not n.in_flight for n in (m.seller, m.buyer, m.notary))


def seller_commits_in_a_trade(tmp_path: Path) -> int:
    """How many commits the seller makes during the trade (a run without faults)."""
    data_dir = tmp_path / "count"
    data_dir.mkdir()
    m = market(MockNetwork(data_dir=data_dir))
    before = m.seller.faults.seen["commit"]
    m.sell().result()
    return m.seller.faults.seen["commit"] - before


def trade_with_the_recording_failing(tmp_path: Path, times: int) -> tuple[Market, str]:
    """A trade whose seller's last commit (recording the finished trade) fails ``times``."""
    commits = seller_commits_in_a_trade(tmp_path)
    data_dir = tmp_path / "trade"
    data_dir.mkdir()
    m = market(MockNetwork(data_dir=data_dir))
    m.seller.faults.fail("commit", RuntimeError("the commit failed"), skip=commits - 1, times=times)
    handle = m.sell()
    m.net.run_network()
    assert m.seller.faults.injected["commit"] == times
    return m, handle.flow_id


def trade_is_exact(m: Market, trade_id: str) -> None:
    assert unconsumed(m.seller) == [("Cash", "seller", "buyer", str(PRICE), trade_id)]
    assert ("CommercialPaper", "buyer", "seller") in [s[:3] for s in unconsumed(m.buyer)]
    assert cash_everywhere(m.net) == CASH
    assert [n.flows() for n in (m.seller, m.buyer, m.notary)] == [[], [], []]
    assert all(not n.in_flight for n in (m.seller, m.buyer, m.notary))


def test_the_sellers_recording_failing_three_times_is_retried_and_the_trade_completes(
    tmp_path: Path,
) -> None:
    m, flow_id = trade_with_the_recording_failing(tmp_path, 3)
    (ok, trade_id) = m.seller.outcomes[flow_id]
    assert ok
    assert isinstance(trade_id, str)
    assert [(r.staff, r.outcome) for r in m.seller.hospital.records] == [
        ("transition", "retry")
    ] * 3
    trade_is_exact(m, trade_id)


def test_the_sellers_recording_failing_four_times_is_kept_and_recorded_after_a_restart(
    tmp_path: Path,
) -> None:
    m, flow_id = trade_with_the_recording_failing(tmp_path, 4)
    assert m.seller.hospital.records[-1].outcome == "observe"
    (parked,) = m.seller.flows()
    assert (parked.flow_id, parked.status) == (flow_id, "HOSPITALIZED")
    assert m.buyer.flows() == []  # the buyer finished: it has the trade
    assert [s[0] for s in unconsumed(m.seller)] == ["CommercialPaper"]  # nothing recorded
    m.net.restart_node(m.seller)
    m.net.run_network()
    (ok, trade_id) = m.seller.outcomes[flow_id]
    assert ok
    assert isinstance(trade_id, str)
    trade_is_exact(m, trade_id)
