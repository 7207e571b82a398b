"""Write the golden fixtures: wire messages, codec values and two node databases.

Run once, with the code whose formats the fixtures pin (``python -m tests.golden.make_fixtures``);
it refuses to overwrite fixtures that exist. The fixtures are a promise: once committed, a change
that makes the current code read them differently fails ``tests/golden``, and changing a format
means a new format version with a migration, not new fixtures. (``--force`` exists for the day a
new format version adds fixtures of its own; keep the old ones beside them.)

The databases are made on a :class:`~parley.testing.MockNetwork` with file-backed stores and
virtual time that does not advance by itself, so every flow of :mod:`tests.golden.flows` stops at
its own kind of suspension: a sleep inside a sub-flow, a send-and-receive, an ``execute`` the node
holds, the flow info of a node that never ran, a receive with a passivated inbox, a flow kept for
observation, a checkpoint forced before an idempotent sub-flow, a responder, and a finished
client-id flow.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from parley.engine.handles import client_flow_id
from parley.flows.registry import FlowRegistry
from parley.protocol import codec
from parley.protocol.errors import HospitalizeFlowException, UnexpectedFlowEndException
from parley.protocol.messages import (
    Confirm,
    Data,
    End,
    Envelope,
    Error,
    FlowInfo,
    Init,
    Reject,
    encode_batch,
    encode_envelope,
)
from parley.protocol.state import Entry, SessionStatus, SubFlowFrame
from parley.testing import MockNetwork, MockNode
from tests.golden import flows
from tests.golden.render import render, render_database

DATA = Path(__file__).resolve().parent / "data"
CLIENT_IDS = ("quick", "patient", "worker", "sleeper", "asker", "prober", "collector", "ledger")


def wire_fixtures() -> dict[str, bytes]:
    """Every kind of envelope, and a batch, as today's code encodes them."""
    session = "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0.0"
    peer = "9a3bd00d9a3bd00d9a3bd00d9a3bd00d.0"
    refused = flows.Refused("too expensive", 7)
    envelopes = {
        "init": Envelope(
            f"{session}:0",
            "alice",
            "bob",
            Init(session, "tests.golden.flows:Asker", 2, "tests.golden.flows", codec.encode("hi")),
        ),
        "init_without_payload": Envelope(
            f"{session}:0", "alice", "bob", Init(session, "tests.golden.flows:Prober", 1, "app")
        ),
        "confirm": Envelope(f"{peer}:0", "bob", "alice", Confirm(session, peer, 1, "app")),
        "data": Envelope(
            f"{peer}:1",
            "bob",
            "alice",
            Data(session, 1, codec.encode(flows.Quote("w", Decimal("1.5"), frozenset({"a"})))),
        ),
        "error": Envelope(
            f"{peer}:2", "bob", "alice", Error(session, 2, f"{peer[:-2]}:e0", codec.encode(refused))
        ),
        "error_hidden": Envelope(f"{peer}:3", "bob", "alice", Error(session, 3, f"{peer[:-2]}:e1")),
        "reject": Envelope(
            f"reject:{session}",
            "bob",
            "alice",
            Reject(session, f"reject:{session}", "Don't know X"),
        ),
        "end": Envelope(f"{peer}:4", "bob", "alice", End(session, 4)),
    }
    encoded = {name: encode_envelope(envelope) for name, envelope in envelopes.items()}
    _, batch = encode_batch([envelopes["confirm"], envelopes["data"], envelopes["end"]])
    encoded["batch"] = batch
    return encoded


def value_fixtures() -> dict[str, bytes]:
    """Journal entries and codec values of every whitelisted kind."""
    values: dict[str, object] = {
        "scalars": [None, True, False, 0, -1, 2**64, -(2**70), 1.5, "ünïcode", b"\x00\xff"],
        "containers": {
            "list": [1, [2, [3]]],
            "tuple": (1, "a", (2.0,)),
            "set": {3, 1, 2},
            "frozenset": frozenset({"x"}),
            "dict": {"k": {"nested": (1,)}, "": []},
        },
        "time": (
            datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            datetime(2026, 1, 2, 3, 4, 5),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            date(2026, 1, 2),
        ),
        "numbers": (Decimal("12.50"), Decimal("-0"), Decimal("NaN"), Decimal("1E+3")),
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
        "serializable": flows.Quote("widget", Decimal("12.50"), frozenset({"a", "b"})),
        "parley_types": (
            FlowInfo(2, "app"),
            SubFlowFrame("m:C", "m:C", 3, True),
            SessionStatus.INITIATING,
        ),
        "exceptions": (
            flows.Refused("no", 3),
            UnexpectedFlowEndException("peer ended"),
            HospitalizeFlowException("wait"),
            ValueError("bad", 1),
            KeyError("k"),
        ),
        "entry_value": Entry("exec tests.golden.flows:double", codec.encode(42)),
        "entry_failed": Entry(
            "exec tests.golden.flows:refuse", codec.encode(flows.Refused("no 21", 21)), True
        ),
        "entry_recorded": Entry("now", codec.encode(datetime(2026, 1, 1, tzinfo=UTC))),
    }
    return {name: codec.encode(value) for name, value in values.items()}


def golden_network(data_dir: Path, *, auto_advance: bool) -> tuple[MockNetwork, MockNode, MockNode]:
    """The network of the golden databases (also used by the tests to restore them)."""
    net = MockNetwork(data_dir=data_dir, auto_advance=auto_advance, seed=7)
    registry = FlowRegistry.from_apps([flows])
    alice = net.create_node("alice", registry=registry)
    bob = net.create_node("bob", registry=registry)
    for node in (alice, bob):
        node.store.apply_app_migrations(flows.__name__, flows.MIGRATIONS)
    return net, alice, bob


def make_databases(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        net, alice, bob = golden_network(Path(tmp), auto_advance=False)
        alice.hold_operations()
        alice.start_flow(flows.Quick(), client_id="quick")
        alice.start_flow(flows.Patient(), client_id="patient")
        alice.start_flow(flows.Worker(21), client_id="worker")
        net.run_network()
        alice.release_operations()  # quick and patient finish; worker's refuse fails
        net.run_network()
        assert len(alice.held_operations or []) == 1, "worker holds its second operation"
        alice.start_flow(flows.Sleeper("golden"), client_id="sleeper")
        alice.start_flow(flows.Asker("bob", "widget"), client_id="asker")
        alice.start_flow(flows.Prober("carol"), client_id="prober")
        alice.start_flow(flows.Collector("bob"), client_id="collector")
        alice.start_flow(flows.Ledger("alice", Decimal("3.75")), client_id="ledger")
        bob.start_flow(flows.Caller("alice"), client_id="caller")
        net.run_network()
        net.advance_clock(120)  # only the ledger's first sleep is due
        net.run_network()
        alice.passivate(client_flow_id("collector"))
        net.run_network()
        assert alice.outcomes == {client_flow_id("quick"): (True, "quick")}, alice.outcomes
        assert list(bob.outcomes.values()) == [(True, None)], "only the fast giver finished"
        out.mkdir(parents=True, exist_ok=True)
        for node in (alice, bob):
            assert node.path is not None
            snapshot(node.path, out / f"{node.name}.sqlite")


def snapshot(source: Path, target: Path) -> None:
    """Copy a live database into one self-contained file (no WAL beside it)."""
    target.unlink(missing_ok=True)
    conn = sqlite3.connect(source)
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()
    copy = sqlite3.connect(target)
    try:
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()


def expected(data: Path) -> dict[str, object]:
    """The rendering of every fixture under ``data``, as the tests compute it."""
    return {
        "wire": {p.stem: render_fixture(p) for p in sorted((data / "wire").glob("*.cbor"))},
        "values": {p.stem: render_fixture(p) for p in sorted((data / "values").glob("*.cbor"))},
        "db": {p.stem: render_database(str(p)) for p in sorted((data / "db").glob("*.sqlite"))},
    }


def render_fixture(path: Path) -> object:
    return render(codec.decode(path.read_bytes()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--force", action="store_true", help="overwrite existing fixtures")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and not args.force:
        print(f"{out} exists: golden fixtures are never regenerated (see --help)", file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)
    for folder, fixtures in (("wire", wire_fixtures()), ("values", value_fixtures())):
        (out / folder).mkdir(parents=True)
        for name, data in fixtures.items():
            (out / folder / f"{name}.cbor").write_bytes(data)
    make_databases(out / "db")
    (out / "expected.json").write_text(json.dumps(expected(out), indent=1, sort_keys=True) + "\n")
    print(f"wrote the golden fixtures to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
