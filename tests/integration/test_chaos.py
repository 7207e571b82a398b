"""A short chaos run (``python -m bench.chaos`` is the long one): three ``parley node run``
processes and one nats-server, flows of every shape of :mod:`bench.chaos_app` started over RPC,
while nodes and the server are killed with SIGKILL at random moments and restarted.

Every flow must end exactly once: one ``COMPLETED`` result on the node that started it, every row
the flows and their responders write present exactly once, nothing left in any node's database.
The seed is printed with any failure, so that a failing run can be repeated
(``python -m bench.chaos --flows 150 --kills 6 --rate 6 --seed N``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.chaos import NODES, run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

FLOWS = 150
KILLS = 6


def test_flows_of_every_shape_finish_exactly_once_while_nodes_and_nats_are_killed(
    tmp_path: Path,
) -> None:
    report = run(FLOWS, KILLS, rate=6.0, sleep=0.5, drain_timeout=150.0, base=tmp_path)

    assert report.problems == [], f"seed {report.seed}:\n" + "\n".join(report.problems[:40])
    assert report.completed == FLOWS
    assert len(report.kills) == KILLS
    assert set(report.kills) <= {*NODES, "nats"}
    print(report.summary())
