"""The durable formats are a promise: the golden fixtures read today as they did when written.

The fixtures under ``data/`` were written once by ``make_fixtures.py`` and are never regenerated.
If one of these tests fails, the change being tested breaks stored checkpoints or the wire: keep
the old format readable (a new format version with a migration) instead of editing the fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from parley.engine.handles import client_flow_id
from parley.flows.registry import FlowRegistry
from parley.protocol import codec
from parley.protocol.messages import decode_envelopes, encode_batch, encode_envelope
from parley.protocol.records import FlowStatus
from tests.golden import flows
from tests.golden.make_fixtures import golden_network
from tests.golden.render import render, render_database

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def fixtures(folder: str, suffix: str) -> list[Path]:
    found = sorted((DATA / folder).glob(f"*{suffix}"))
    assert found, f"no fixtures in {DATA / folder}"
    return found


@pytest.mark.parametrize("path", fixtures("wire", ".cbor"), ids=lambda p: p.stem)
def test_wire_fixture_decodes_field_by_field_as_recorded(path: Path) -> None:
    data = path.read_bytes()
    assert render(codec.decode(data)) == EXPECTED["wire"][path.stem]
    envelopes = decode_envelopes(data)
    if path.stem == "batch":
        assert len(envelopes) == 3
        assert encode_batch(envelopes)[1] == data
    else:
        (envelope,) = envelopes
        assert encode_envelope(envelope) == data, "re-sent messages must be byte-identical"


@pytest.mark.parametrize("path", fixtures("values", ".cbor"), ids=lambda p: p.stem)
def test_value_fixture_decodes_field_by_field_as_recorded(path: Path) -> None:
    value = codec.decode(path.read_bytes())
    assert render(value) == EXPECTED["values"][path.stem]
    assert render(codec.decode(codec.encode(value))) == EXPECTED["values"][path.stem]


@pytest.mark.parametrize("path", fixtures("db", ".sqlite"), ids=lambda p: p.stem)
def test_database_fixture_reads_row_by_row_as_recorded(path: Path) -> None:
    assert render_database(str(path)) == EXPECTED["db"][path.stem]


def test_every_kind_of_stored_suspension_is_in_the_golden_database() -> None:
    pending = {
        flow["header"]["pending_request"]
        for db in EXPECTED["db"].values()
        for flow in db["flows"].values()
    }
    assert pending == {"sleep", "send_and_receive", "receive", "execute", "flow_info", "checkpoint"}
    statuses = {
        flow["header"]["status"] for db in EXPECTED["db"].values() for flow in db["flows"].values()
    }
    assert statuses == {"RUNNABLE", "HOSPITALIZED"}


@pytest.fixture
def restored(tmp_path: Path) -> Path:
    shutil.copytree(DATA / "db", tmp_path / "db")
    return tmp_path / "db"


@pytest.fixture
def gate_open() -> object:
    flows.GATE["open"] = True
    yield
    flows.GATE["open"] = False


@pytest.mark.usefixtures("gate_open")
def test_the_golden_databases_restore_and_every_flow_completes(restored: Path) -> None:
    net, alice, bob = golden_network(restored, auto_advance=True)
    carol = net.create_node("carol", registry=FlowRegistry.from_apps([flows]))
    flows.OPERATION_CALLS.clear()
    net.run_network()
    # Worker's held operation runs again (once), patient's is retried: nothing else re-runs.
    assert sorted(flows.OPERATION_CALLS) == ["double", "noop"]
    for client_id, result in flows.RESULTS.items():
        node = bob if client_id == "caller" else alice
        if client_id == "quick":  # it finished before the snapshot: its result was stored
            assert node.start_flow(flows.Quick(), client_id="quick").result() == "quick"
            continue
        assert node.outcomes.get(client_flow_id(client_id)) == (True, result), client_id
    for node in (alice, bob, carol):
        assert node.store.list_flows(FlowStatus.RUNNABLE) == [], node.name
        assert node.store.list_flows(FlowStatus.HOSPITALIZED) == [], node.name
        assert node.live_flows == [], node.name
    # alice's seven restored flows, its responder and the stored quick; bob's caller and two
    # responders; carol's responder.
    assert sum(ok for ok, _ in alice.outcomes.values()) == 9
    assert sum(ok for ok, _ in bob.outcomes.values()) == 3
    assert list(carol.outcomes.values()) == [(True, None)]
    assert alice.store.query("SELECT who, amount FROM golden_ledger") == [("alice", "3.75")]


def test_the_fixtures_are_not_modified_by_the_tests() -> None:
    assert render_database(str(DATA / "db" / "alice.sqlite")) == EXPECTED["db"]["alice"]
    assert not list((DATA / "db").glob("*-wal")), "a test opened a fixture for writing"
