"""The replay checker: stored checkpoints replayed against the current code, nothing run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parley import FlowLogic
from parley.engine.replay import check_store
from parley.flows.marks import FLOW_CLASSES
from parley.protocol.errors import type_name
from parley.store import SqliteStore
from parley.testing import MockNetwork, replay_database
from tests.golden import flows

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "data" / "db"


def test_every_flow_of_the_golden_databases_replays_with_the_current_code() -> None:
    report = replay_database(GOLDEN, apps=["tests.golden.flows"])
    assert report.ok, str(report)
    assert len(report) == 11
    assert {r.pending for r in report} == {
        "sleep",
        "send_and_receive",
        "receive",
        "execute",
        "flow_info",
        "checkpoint",
    }


def test_the_checker_runs_nothing_and_changes_nothing(tmp_path: Path) -> None:
    shutil.copy(GOLDEN / "alice.sqlite", tmp_path / "alice.sqlite")
    before = (tmp_path / "alice.sqlite").read_bytes()
    flows.OPERATION_CALLS.clear()
    assert replay_database(tmp_path / "alice.sqlite").ok
    assert flows.OPERATION_CALLS == [], "the checker ran an external operation"
    assert (tmp_path / "alice.sqlite").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.sqlite"]


class Counter(FlowLogic[int]):
    async def call(self) -> int:
        first = await self.execute(len, "ab")
        await self.sleep(60)
        return first


def _stored_counter(tmp_path: Path) -> Path:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    node = net.create_node("alice")
    node.start_flow(Counter(), client_id="c")
    net.run_network()
    node.store.close()
    return tmp_path / "alice.sqlite"


def test_changed_flow_code_is_reported_with_the_request_that_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _stored_counter(tmp_path)

    async def changed(self: Counter) -> int:
        await self.sleep(60)  # the stored journal starts with the execute
        return 0

    monkeypatch.setattr(Counter, "call", changed)
    report = replay_database(path)
    assert not report.ok
    ((where, result),) = report.failures
    assert where == path
    assert result.flow_class.endswith(":Counter")
    assert result.pending == "sleep"
    assert result.error_type == "parley.protocol.errors:NonDeterministicFlowError"
    assert "asked for 'now' where its journal records 'exec builtins:len'" in (result.error or "")
    assert "do not replay" in str(report)


def test_a_flow_class_that_no_longer_exists_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _stored_counter(tmp_path)
    with SqliteStore(path) as store:
        (flow_id,) = store.runnable_flow_ids()
    monkeypatch.delitem(FLOW_CLASSES, type_name(Counter))  # as if the class were renamed
    with SqliteStore(path, readonly=True) as store:
        (result,) = check_store(store)
    assert result.flow_id == flow_id
    assert not result.ok
    assert "no flow class named" in (result.error or "")


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database"):
        replay_database(tmp_path / "nope.sqlite")
    with pytest.raises(FileNotFoundError, match=r"no \*.sqlite"):
        replay_database(tmp_path)
