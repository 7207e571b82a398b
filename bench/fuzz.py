"""fuzz: hostile messages against a node with a network map while honest flows run (long mode).

``python -m bench.fuzz --envelopes 50000 --seed 1`` starts a nats-server and, in this process, two
nodes admitted by an operator: alice (attacked) and bob (honest). It admits an attacker (mallory,
whose key it holds), admits and revokes trudy, and keeps a never-admitted key (eve). Ping rounds
run between alice and bob before, during and after the attack, both ways; the hostile messages
come from :mod:`parley.testing.fuzz` with a ``random.Random`` seeded by ``--seed``, made from the
traffic captured so far. It prints the figures and exits with 1 if a check failed (a crash, a
corrupted or stuck flow, a consumer not drained, refusals that disagree with the oracle).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.apps.pingpong import Ping
from parley.flows.registry import FlowRegistry
from parley.identity.keys import KeyPair, load_identity, new_operator_key
from parley.node import Node, NodeConfig
from parley.testing.fuzz import (
    Arena,
    Campaign,
    Corpus,
    ErrorLog,
    Fuzzer,
    Oracle,
    Party,
    RandomChoices,
    Report,
    StartHonest,
    wait_until,
)
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer

#: The node's message size limit in these runs (under NATS' 1 MiB, so oversized ones can be sent).
MAX_SIZE = 256 * 1024
#: Rounds of each honest Ping: its result is ``n + ROUNDS``.
ROUNDS = 3


APPS = ["parley.apps.pingpong"]


@dataclass
class Battlefield:
    """Two honest nodes, the attacker (mallory), its campaign against alice, and the error log.

    ``tests/integration/test_fuzz.py`` fights on the same field (with Hypothesis choosing).
    """

    alice: Node
    bob: Node
    mallory: Party
    campaign: Campaign
    errors: ErrorLog

    @property
    def fuzzer(self) -> Fuzzer:
        return self.campaign.fuzzer

    def finish(self, timeout: float = 120.0) -> Report:
        report = self.campaign.finish(timeout)
        report.crashes += [f"logged: {line}" for line in self.errors.lines]
        return report

    def redelivered(self, timeout: float = 120.0) -> float | None:
        """Seconds until the consumer drained (JetStream redelivers what was stranded after
        ``ack_wait``, and the node then acks it), or None if it did not within ``timeout``."""
        began = time.monotonic()
        try:
            wait_until(lambda: self.fuzzer.consumer_state("alice") == (0, 0), timeout, 0.5)
        except TimeoutError:
            return None
        return time.monotonic() - began


def pings(alice: Node, bob: Node) -> StartHonest:
    """Honest flow ``n``: a Ping from alice to bob (even) or from bob to alice (odd)."""

    def start(n: int) -> tuple[Future[Any], object]:
        node, peer = (alice, "bob") if n % 2 == 0 else (bob, "alice")
        return node.start_flow(Ping(peer, n, rounds=ROUNDS), wait_started=False).future, n + ROUNDS

    return start


@contextmanager
def battlefield(root: Path, url: str, *, honest_per_batch: int = 2) -> Iterator[Battlefield]:
    """Set up the network (see the module docstring) and a campaign against alice."""
    operator = new_operator_key()
    admin = NetworkAdmin(url, operator)
    mallory, eve, trudy = (Party(name, KeyPair.generate()) for name in ("mallory", "eve", "trudy"))
    admin.admit(mallory.name, [mallory.key.public_key])
    admin.admit(trudy.name, [trudy.key.public_key])
    admin.revoke(trudy.name)
    nodes: list[Node] = []
    with ErrorLog() as errors, contextlib.ExitStack() as stack:
        for name in ("alice", "bob"):
            admin.admit(name, [load_identity(root / name).public_key])
            config = NodeConfig(
                name,
                root / name,
                nats_url=url,
                apps=APPS,
                operator_key=operator.public_key,
                max_message_size=MAX_SIZE,
            )
            nodes.append(stack.enter_context(Node(config)))
        alice, bob = nodes
        fuzzer = Fuzzer(url)
        stack.callback(fuzzer.close)
        arena = Arena(
            "alice", mallory, eve, Corpus("alice", mallory.name), trudy, ["bob"], MAX_SIZE
        )
        registry = FlowRegistry.from_apps(APPS)
        oracle = Oracle("alice", fuzzer.network_map(operator.public_key), MAX_SIZE, registry)
        campaign = Campaign(
            fuzzer,
            alice,
            arena,
            oracle,
            pings(alice, bob),
            honest_per_batch=honest_per_batch,
            others=[bob],
        )
        yield Battlefield(alice, bob, mallory, campaign, errors)


def run(envelopes: int, seed: int, batch: int = 500) -> Report:
    """Fuzz a fresh network with ``envelopes`` hostile messages from ``seed``."""
    choices = RandomChoices(random.Random(seed))
    with tempfile.TemporaryDirectory(prefix="parley-fuzz-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats", max_file_store="2G")
        url = nats.start()
        try:
            with battlefield(Path(tmp), url) as field:
                field.campaign.prepare(flows=20)
                for start in range(0, envelopes, batch):
                    size = min(batch, envelopes - start)
                    field.campaign.attack(field.campaign.batch(choices, size))
                report = field.finish()
                if report.stranded:
                    waited = field.redelivered()
                    late = "not within 120 s" if waited is None else f"after {waited:.0f} s"
                    report.notes.append(f"stranded messages acked once redelivered: {late}")
                return report
        finally:
            nats.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--envelopes", type=int, default=50_000, help="hostile messages to send")
    parser.add_argument("--seed", type=int, default=1, help="seed of the mutations")
    parser.add_argument("--batch", type=int, default=500, help="messages per published batch")
    args = parser.parse_args(argv)
    # Every refusal is a WARNING line: keep the node's log to what matters here.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("parley").setLevel(logging.ERROR)
    report = run(args.envelopes, args.seed, args.batch)
    print(f"seed {args.seed}")
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
