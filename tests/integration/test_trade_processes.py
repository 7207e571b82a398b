"""The two-party trade on three node processes over a real nats-server, with a network map,
and a ``kill -9`` of the buyer in the middle of the trade.

The notary is stopped before the trade, so the buyer's request for its signature waits in the
notary's stream: that is where the buyer is killed, with its flow checkpointed on the wait. Its
vault must not show the trade yet; restarted (and the notary with it), it carries the trade on
from its checkpoint, and every vault ends exact.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from parley.identity.keys import load_identity, new_operator_key
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.nodes import (
    NodeProcess,
    node_process,
    rows,
    run_flow_process,
    start_flow_process,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPS = ["parley.apps.trade"]
NAMES = ("seller", "buyer", "notary")
NOTARISING = "Recording completed transaction / Requesting signature by notary service"


def unconsumed(db: Path) -> list[tuple[object, ...]]:
    return sorted(
        rows(
            db,
            "SELECT kind, owner, amount, tx_id FROM vault_states"
            " WHERE ref NOT IN (SELECT ref FROM vault_consumed)",
        )
    )


def outcome(done: subprocess.CompletedProcess[str] | tuple[str, str]) -> object:
    stdout = done.stdout if isinstance(done, subprocess.CompletedProcess) else done[0]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert "result" in result, result
    return result["result"]


def test_a_trade_between_three_node_processes_survives_a_kill_9_of_the_buyer(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    url = nats_server.url
    assert url is not None
    operator = new_operator_key()
    admin = NetworkAdmin(url, operator)
    dirs = {name: tmp_path / name for name in NAMES}
    for name, data_dir in dirs.items():
        admin.admit(name, [load_identity(data_dir).public_key])
    on_map = ["--operator-key", operator.public_key]

    def run(name: str, flow: str, args: list[str], client_id: str) -> object:
        done = run_flow_process(
            name=name,
            nats_url=url,
            data_dir=dirs[name],
            flow=f"parley.apps.trade:{flow}",
            args=json.dumps(args),
            client_id=client_id,
            extra_args=on_map,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return outcome(done)

    paper_tx = run(
        "seller", "IssuePaper", ["1100", "USD", "2027-01-01T00:00:00+00:00", "notary"], "p"
    )
    cash_tx = run("buyer", "IssueCash", ["1500", "USD", "notary"], "c")
    run("buyer", "PlaceBid", ["seller", "CommercialPaper", "1000", "USD"], "b")
    with node_process("notary", url, dirs["notary"], APPS, extra_args=on_map):
        pass  # the notary's stream now exists: requests wait there while it is down

    buyer = NodeProcess("buyer", url, dirs["buyer"], APPS, extra_args=on_map).start()
    seller = start_flow_process(
        name="seller",
        nats_url=url,
        data_dir=dirs["seller"],
        flow="parley.apps.trade:Seller",
        args=json.dumps(["buyer", f"{paper_tx}:0", "1000", "USD"]),
        client_id="trade",
        extra_args=[*on_map, "--timeout", "120"],
    )

    def notarising() -> list[tuple[object, ...]]:
        if seller.poll() is not None:
            raise AssertionError(f"the seller ended early: {seller.communicate()}")
        step = "SELECT 1 FROM flow_header WHERE progress_step LIKE ?"
        return rows(buyer.db, step, (NOTARISING + "%",))

    try:
        wait_for(notarising, 60, "the buyer to wait for the notary")
        buyer.kill()
        # Killed mid-trade: the trade is not in the buyer's vault, its cash is still its own.
        assert unconsumed(dirs["buyer"] / "parley.sqlite") == [("Cash", "buyer", "1500", cash_tx)]
        assert unconsumed(dirs["seller"] / "parley.sqlite") == [
            ("CommercialPaper", "seller", "1100", paper_tx)
        ]
        with (
            node_process("buyer", url, dirs["buyer"], APPS, extra_args=on_map) as buyer,
            node_process("notary", url, dirs["notary"], APPS, extra_args=on_map) as notary,
        ):
            out, err = seller.communicate(timeout=150)
            assert seller.returncode == 0, err[-3000:]
            trade_id = outcome((out, err))
            wait_for(
                lambda: rows(
                    buyer.db, "SELECT 1 FROM vault_transactions WHERE id = ?", (trade_id,)
                ),
                30,
                "the buyer to record the trade",
            )
            wait_for(
                lambda: not rows(buyer.db, "SELECT 1 FROM flow_header WHERE status = 'RUNNABLE'"),
                30,
                "the buyer's flows to end",
            )
            commits = rows(notary.db, "SELECT ref, tx_id FROM notary_commits ORDER BY ref")
    finally:
        if seller.poll() is None:
            seller.kill()
            seller.communicate()
        buyer.kill()

    seller_db, buyer_db = dirs["seller"] / "parley.sqlite", dirs["buyer"] / "parley.sqlite"
    assert unconsumed(seller_db) == [("Cash", "seller", "1000", trade_id)]
    assert unconsumed(buyer_db) == [
        ("Cash", "buyer", "500", trade_id),
        ("CommercialPaper", "buyer", "1100", trade_id),
    ]
    assert sorted(commits) == sorted([(f"{cash_tx}:0", trade_id), (f"{paper_tx}:0", trade_id)])
    cash = [
        Decimal(str(a))
        for db in (seller_db, buyer_db)
        for k, _, a, _ in unconsumed(db)
        if k == "Cash"
    ]
    assert sum(cash) == Decimal(1500)
    assert rows(buyer_db, "SELECT count(*) FROM trade_bids") == [(0,)]
