"""The trade with each node crashed and restarted at every step: the vaults stay exact.

``restart_at_every_step`` runs the trade once per pump step of the trade (the issues and the bid
are set up before the steps are counted) with one node restarted after that step: everything in
its memory is lost, the messages it had not acknowledged come again, and its flows carry on from
their last checkpoints. Whatever the step, the trade ends once, and no cash is created or lost.
"""

from __future__ import annotations

import pytest

from parley.testing import MockNetwork, restart_at_every_step
from tests.apps.trading import (
    CASH,
    FACE_VALUE,
    PRICE,
    cash_everywhere,
    consumed,
    notary_commits,
    trade,
    transactions,
    unconsumed,
)


@pytest.mark.parametrize("node", ["seller", "buyer", "notary"])
def test_a_node_restarted_at_any_step_of_the_trade_leaves_every_vault_exact(node: str) -> None:
    runs = restart_at_every_step(trade, restart=node)
    assert len(runs) > 20
    for run in runs:
        trade_id, net = run.result, run.network
        seller, buyer, notary = (net.nodes[n] for n in ("seller", "buyer", "notary"))
        assert unconsumed(seller) == [("Cash", "seller", "buyer", str(PRICE), trade_id)], run
        assert unconsumed(buyer) == [
            ("Cash", "buyer", "buyer", str(CASH - PRICE), trade_id),
            ("CommercialPaper", "buyer", "seller", str(FACE_VALUE), trade_id),
        ], run
        assert [c for _, c in consumed(seller)] == [trade_id], run
        assert [c for _, c in consumed(buyer)] == [trade_id], run
        assert len(transactions(seller)) == len(transactions(buyer)) == 3, run
        assert trade_id in transactions(seller), run
        assert trade_id in transactions(buyer), run
        assert [(t, who) for _, t, who in notary_commits(notary)] == [(trade_id, "buyer")] * 2, run
        spent = sorted(str(ref) for ref, _ in consumed(seller) + consumed(buyer))
        assert [str(ref) for ref, _, _ in notary_commits(notary)] == spent, run
        assert cash_everywhere(net) == CASH, run
        assert buyer.store.query("SELECT count(*) FROM trade_bids") == [(0,)], run
        assert [n.flows() for n in (seller, buyer, notary)] == [[], [], []], run


def test_the_restart_runs_cover_every_step_of_the_trade() -> None:
    baseline = MockNetwork()
    finish = trade(baseline)
    steps = baseline.run_network()
    finish()
    runs = restart_at_every_step(trade, restart="buyer")
    assert [run.step for run in runs] == list(range(steps))
