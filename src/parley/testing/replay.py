"""Replaying stored node databases against the current code, in a test.

Before deploying a change to flow code, check that the flows already stored by your nodes still
replay with it. Keep a database from a real node (or one written by a test with
``MockNetwork(data_dir=...)``) next to your tests and assert::

    from parley.testing import replay_database

    def test_stored_trades_replay_with_the_new_code() -> None:
        report = replay_database("tests/data/seller.sqlite", apps=["myapp.trade"])
        assert report.ok, report

``replay_database`` copies the database first and reads only the copy, so it never changes the
file it is given (a running node's database included). A directory stands for every ``*.sqlite``
file in it, one per node. Each stored flow is rebuilt and re-run against its journal up to the
request it waits on, with nothing external happening (see :mod:`parley.engine.replay`).
"""

from __future__ import annotations

from parley.engine.replay import ReplayReport, ReplayResult, replay_database

__all__ = ["ReplayReport", "ReplayResult", "replay_database"]
