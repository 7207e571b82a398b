"""What the fault scenarios share: two nodes on a mock network with files, and "all settled"."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parley.testing import MockNetwork, MockNode


def two_nodes(
    tmp_path: Path, *, apps: Sequence[str] | None = None, auto_advance: bool = True
) -> tuple[MockNetwork, MockNode, MockNode]:
    """A network with its SQLite files under ``tmp_path`` and the nodes alice and bob (running
    ``apps``, or every responder imported when ``None``)."""
    net = MockNetwork(data_dir=tmp_path, auto_advance=auto_advance)
    return net, net.create_node("alice", apps=apps), net.create_node("bob", apps=apps)


def settled(net: MockNetwork) -> bool:
    """Nothing stored, nothing in memory, nothing un-acked on any node."""
    return all(not n.flows() and not n.live_flows and not n.in_flight for n in net.nodes.values())
