"""``parley demo``: the trade on three node processes from nothing, as a subprocess, with nothing
pre-started; its vaults read back from the data dir, and no process of it left behind.

The double spend it shows (``SpendAgain``) is tested on MockNetwork first.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from parley import FlowException
from parley.apps.trade import NotaryException, SpendAgain
from parley.testing import MockNetwork
from tests.apps.trading import CASH, consumed, market, notary_commits, transactions

DEMO_WAIT = 90.0  # seconds; the demo itself takes a few


# ---------------------------------------------------------------------- SpendAgain, on MockNetwork


def test_spending_again_what_the_trade_spent_is_refused_by_the_notary() -> None:
    m = market(MockNetwork())
    trade_id = m.sell().result()
    cash_ref = f"{m.cash_tx}:0"
    with pytest.raises(NotaryException) as refused:
        m.buyer.start_flow(SpendAgain(cash_ref)).result()
    assert (refused.value.conflicting_tx, refused.value.ref) == (trade_id, cash_ref)
    assert str(refused.value) == f"input {cash_ref} was consumed by transaction {trade_id}"
    assert len(transactions(m.buyer)) == 3  # nothing recorded
    assert len(notary_commits(m.notary)) == 2


def test_a_state_not_spent_yet_is_not_tried() -> None:
    m = market(MockNetwork())
    cash_ref = f"{m.cash_tx}:0"
    with pytest.raises(FlowException, match="buyer has not spent"):
        m.buyer.start_flow(SpendAgain(cash_ref)).result()
    assert consumed(m.buyer) == []
    assert notary_commits(m.notary) == []


# ---------------------------------------------------------------------- the command


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def unconsumed(db: Path) -> list[tuple[object, ...]]:
    return sorted(
        rows(
            db,
            "SELECT kind, owner, amount, tx_id FROM vault_states"
            " WHERE ref NOT IN (SELECT ref FROM vault_consumed)",
        )
    )


def processes_in(directory: Path) -> list[str]:
    """Processes whose working directory or command line points into ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(directory) in command or cwd.startswith(str(directory))):
            found.append(f"{entry.name}: {command}")
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_demo(data_dir: Path, *options: str) -> str:
    """``parley demo --data-dir DATA_DIR [OPTIONS]``; its output, once it exited with 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    command = [sys.executable, "-m", "parley.cli", "demo", "--data-dir", str(data_dir), *options]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=DEMO_WAIT,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def check_the_ledger(data_dir: Path, out: str) -> str:
    """The vaults after the trade and the refused double spend; returns the trade's id."""
    found = re.search(r"transaction\s+([0-9a-f]{64})\n", out)
    assert found, out
    trade_id = found.group(1)
    seller, buyer, notary = (data_dir / n / "parley.sqlite" for n in ("seller", "buyer", "notary"))
    assert unconsumed(seller) == [("Cash", "seller", "1000", trade_id)]
    buyer_states = unconsumed(buyer)
    assert [(k, o, a) for k, o, a, _ in buyer_states] == [
        ("Cash", "buyer", "500"),
        ("CommercialPaper", "buyer", "1100"),
    ]
    assert {tx for *_, tx in buyer_states} == {trade_id}
    # Recorded once on each side; the notary committed the trade's two inputs, once each.
    for db in (seller, buyer):
        assert rows(db, "SELECT count(*) FROM vault_transactions WHERE id = ?", trade_id) == [(1,)]
    commits = rows(notary, "SELECT tx_id FROM notary_commits")
    assert commits == [(trade_id,), (trade_id,)]
    cash = sum(
        (Decimal(str(a)) for db in (seller, buyer) for k, _, a, _ in unconsumed(db) if k == "Cash"),
        Decimal(0),
    )
    assert cash == CASH
    # The double spend: refused by the notary, which names the trade; nothing recorded.
    assert "refused by the notary: input" in out
    assert re.search(rf"was consumed by transaction\s+{trade_id}", out), out
    assert rows(buyer, "SELECT count(*) FROM vault_transactions") == [(3,)]
    # The vault tables.
    for title in ("the seller's vault", "the buyer's vault", "the notary's commits"):
        assert title in out
    return trade_id


def check_nothing_left(data_dir: Path, out: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
    assert len(pids) >= 4, out  # nats-server and the three nodes
    assert [p for p in pids if alive(p)] == []
    assert processes_in(data_dir) == []
    assert "no process left" in out
    return pids


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "demo"
    yield directory
    for line in processes_in(directory):  # a failed test must not leave processes either
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


@pytest.mark.slow
def test_the_demo_trades_prints_the_vaults_and_shows_a_double_spend_refused(
    data_dir: Path,
) -> None:
    out = run_demo(data_dir)
    check_the_ledger(data_dir, out)
    check_nothing_left(data_dir, out)
    # Both sides' progress, child steps indented under the step that runs them.
    assert "  seller Awaiting transaction proposal\n" in out
    assert "  seller   Signing transaction proposal\n" in out
    assert "  buyer  Collecting signatures from other parties\n" in out
    assert "  buyer      Requesting signature by notary service\n" in out
    assert "every message is signed" in out
    assert (data_dir / "network" / "operator.pub").read_text().startswith("O")


@pytest.mark.slow
def test_the_demo_with_a_crash_kills_and_restarts_the_buyer_and_trades_exactly_once(
    data_dir: Path,
) -> None:
    out = run_demo(data_dir, "--crash")
    check_the_ledger(data_dir, out)
    killed = re.search(r"killed \(SIGKILL, pid (\d+)\) at: (.+)\n", out)
    again = re.search(r"started again \(pid (\d+)\)", out)
    assert killed, out
    assert again, out
    assert killed.group(1) != again.group(1)
    assert "exactly once" in out
    assert int(killed.group(1)) in check_nothing_left(data_dir, out)


@pytest.mark.slow
def test_an_interrupted_demo_stops_everything_it_started(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    command = [sys.executable, "-m", "parley.cli", "demo", "--data-dir", str(data_dir)]
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # Ctrl-C once the nodes run
            lines.append(line)
            if line.lstrip().startswith("nodes"):
                proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEMO_WAIT) == 130, "".join(lines)
    check_nothing_left(data_dir, "".join(lines))
