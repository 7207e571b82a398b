"""parked: many flows waiting in ``receive`` on one node; memory, threads, then their release.

The node runs in its own process (``parley node run``, ``max_live_flows`` 1,000) so its memory
can be read from ``/proc``. This process plays the peer by hand: it sends ``count`` session-inits
for the ``Parked`` responder, waits for every Confirm (each flow is then checkpointed and parked in
``receive``), reads the node's resident memory and thread count, then sends each flow its value and
times until every answer arrived. Also reports the bytes each parked flow takes in SQLite.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import NodeProcess, proc_status, query, wait_until
from parley.protocol import codec, ids
from parley.protocol.messages import Confirm, Data, Init, SessionMessage
from parley.testing import HandPeer
from parley.transport.natsserver import EmbeddedNatsServer

PARK = "bench.flows:Park"


def run(count: int, *, max_live_flows: int = 1000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="parley-parked-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats")
        url = nats.start()
        node = NodeProcess(
            "parker", url, Path(tmp) / "node", ["bench.flows"],
            "--max-live-flows", str(max_live_flows),
        )  # fmt: skip
        peer = HandPeer(url, "driver")
        try:
            return _measure(node, peer, count, max_live_flows)
        finally:
            peer.close()
            node.stop()
            nats.stop()


def _measure(node: NodeProcess, peer: HandPeer, count: int, budget: int) -> dict[str, Any]:
    before = proc_status(node.pid)
    sessions = [f"{n:032x}.0" for n in range(count)]
    inits: list[tuple[str, SessionMessage]] = [
        (ids.message_id(s, 0), Init(s, PARK, 1, "bench", None)) for s in sessions
    ]
    started = time.perf_counter()
    peer.send_many("parker", inits)
    theirs: dict[str, str] = {}
    while len(theirs) < count:
        confirm = peer.next(timeout=120)
        assert isinstance(confirm.body, Confirm)
        theirs[confirm.body.session] = confirm.body.initiated_session
    parked_in = time.perf_counter() - started
    wait_until(
        lambda: query(node.db, "SELECT count(*) FROM flow_header")[0][0] >= count,
        120,
        "every parked flow to be checkpointed",
    )
    time.sleep(1.0)  # let the node settle (passivation, allocator) before reading /proc
    parked = proc_status(node.pid)
    storage = _storage(node.db, count)
    datas: list[tuple[str, SessionMessage]] = [
        (ids.message_id(s, 1), Data(theirs[s], 1, codec.encode(n))) for n, s in enumerate(sessions)
    ]
    started = time.perf_counter()
    peer.send_many("parker", datas)
    answered = 0
    while answered < count:
        if isinstance(peer.next(timeout=120).body, Data):
            answered += 1
    released_in = time.perf_counter() - started
    return {
        "flows": count,
        "max_live_flows": budget,
        "parked_per_s": round(count / parked_in, 1),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "rss_parked_mib": round(parked["VmRSS"] / 1024, 1),
        "bytes_per_parked_flow": round((parked["VmRSS"] - before["VmRSS"]) * 1024 / count),
        "threads_before": before["Threads"],
        "threads_parked": parked["Threads"],
        "release_s": round(released_in, 2),
        "released_per_s": round(count / released_in, 1),
        **storage,
    }


def _storage(db: Path, count: int) -> dict[str, Any]:
    """Bytes in SQLite per parked flow: the pages its rows use, and the encoded parts alone."""
    (pages,) = query(db, "PRAGMA page_count")[0]
    (free,) = query(db, "PRAGMA freelist_count")[0]
    (page_size,) = query(db, "PRAGMA page_size")[0]
    blobs = query(
        db,
        "SELECT (SELECT sum(length(header)) FROM flow_header),"
        " (SELECT coalesce(sum(length(entry)), 0) FROM journal),"
        " (SELECT sum(length(args) + length(flow_id) + length(flow_class)) FROM flow_start),"
        " (SELECT count(*) FROM processed_init)",
    )[0]
    header, journal, start, inits = blobs
    return {
        "db_bytes_per_flow": round((pages - free) * page_size / count),
        "checkpoint_bytes_per_flow": round((header + journal + start) / count),
        "header_bytes": round(header / count),
        "processed_inits": inits,
    }


if __name__ == "__main__":
    print(run(10_000))
