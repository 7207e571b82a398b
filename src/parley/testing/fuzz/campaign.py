"""A campaign: one node attacked while honest flows run, then checked; its :class:`Report`.

Also what a campaign needs of a node (:class:`Target`), of the caller (:data:`StartHonest`),
the :class:`ErrorLog` of a node in this process, and :func:`wait_until`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from parley.engine.handles import flow_id_for, responder_flow_id
from parley.engine.hospital import Admission, Outcome
from parley.protocol import ids
from parley.protocol.messages import Envelope, Init, encode_envelope
from parley.protocol.records import FlowStatus
from parley.store import FlowSummary
from parley.testing.fuzz.choices import Choices
from parley.testing.fuzz.corpus import ACCEPTED, Arena, Hostile
from parley.testing.fuzz.driver import Fuzzer
from parley.testing.fuzz.mutations import as_attacker, hostile
from parley.testing.fuzz.oracle import Oracle
from parley.transport.router import REASONS


class Target(Protocol):
    """What a campaign needs of a node (a ``parley.node.Node`` is one)."""

    running: bool

    def stats(self, timeout: float = ...) -> dict[str, int]: ...

    def flows(self, status: FlowStatus | None = None) -> list[FlowSummary]: ...

    def kill_flow(self, flow_id: str, timeout: float = ...) -> bool: ...

    def hospital_records(self, timeout: float = ...) -> list[Admission]: ...


#: Starts the n-th honest flow; returns its result's future and the result it must have.
StartHonest = Callable[[int], tuple["Future[Any]", object]]


class ErrorLog(logging.Handler):
    """Collects ERROR records of the node's loggers (for a node in this process)."""

    LOGGERS: Final = ("parley", "asyncio", "nats", "pykka")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}"[:300])

    def __enter__(self) -> ErrorLog:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


@dataclass
class Report:
    """The figures of a campaign; ``ok`` when nothing that must hold failed."""

    tried: int = 0
    dropped_by_stream: int = 0
    by_mutation: collections.Counter[str] = field(default_factory=collections.Counter)
    expected: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: dict[str, int] = field(default_factory=dict)
    honest_flows: int = 0
    crashes: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    attacker_flows_left: int = 0
    attacker_flows_failed: int = 0
    inits_held: int = 0
    inits_released: int = 0
    skipped_known: int = 0
    #: Messages left un-acked to flows that have ended (see :meth:`Campaign._leftovers`).
    stranded: list[str] = field(default_factory=list)
    #: Lines the caller adds to the rendering.
    notes: list[str] = field(default_factory=list)
    consumer: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    @property
    def delivered(self) -> int:
        return self.tried - self.dropped_by_stream

    @property
    def accepted(self) -> int:
        return self.delivered - sum(self.refused.values())

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Reasons whose count differs from the oracle's: ``{reason: (node, oracle)}``."""
        reasons = set(self.refused) | set(self.expected) | {ACCEPTED}
        counts = {**self.refused, ACCEPTED: self.accepted}
        found = {r: (counts.get(r, 0), self.expected.get(r, 0)) for r in reasons}
        return {r: pair for r, pair in found.items() if pair[0] != pair[1]}

    @property
    def undrained(self) -> int:
        """Messages left in the consumer beyond the stranded ones."""
        return sum(self.consumer) - len(self.stranded)

    @property
    def ok(self) -> bool:
        return not (
            self.crashes or self.corrupted or self.stuck or self.mismatches or self.undrained
        )

    def render(self) -> str:
        rate = self.tried / self.seconds if self.seconds else 0.0
        lines = [
            f"envelopes tried:             {self.tried}",
            f"  dropped by JetStream dedup:  {self.dropped_by_stream}",
            f"  delivered:                   {self.delivered}",
            f"  accepted (harmless):         {self.accepted}",
            f"crashes:                     {len(self.crashes)}",
            f"flows corrupted or stuck:    {len(self.corrupted) + len(self.stuck)}",
            f"honest flows completed:      {self.honest_flows - len(self.corrupted + self.stuck)}"
            f" of {self.honest_flows}",
            f"attacker's flows left open:  {self.attacker_flows_left} (killed at the end)",
            f"attacker's flows failed:     {self.attacker_flows_failed} (the attacker was told)",
            f"inits held un-acked:         {self.inits_held} (unknown class; {self.inits_released}"
            " released by kill at the end)",
            f"skipped (known finding):     {self.skipped_known}",
            f"consumer (unacked, pending): {self.consumer}, of which stranded {len(self.stranded)}"
            " (a known finding: un-acked until JetStream redelivers it)",
            f"refusals agree with oracle:  {not self.mismatches} {self.mismatches or ''}",
            "refusals by reason:",
            *(f"  {r:<17} {n:>7}" for r, n in sorted(self.refused.items()) if n),
            "mutations:",
            *(f"  {m:<17} {n:>7}" for m, n in sorted(self.by_mutation.items())),
            f"seconds:                     {self.seconds:.1f}",
            f"envelopes/s:                 {rate:.0f}",
        ]
        for title, items in (("crash", self.crashes), ("corrupted", self.corrupted)):
            lines += [f"{title}: {item}" for item in items[:20]]
        lines += [f"stuck: {item}" for item in self.stuck[:20]]
        return "\n".join(lines + self.notes)


class Campaign:
    """Attacks ``target`` while honest flows run; see the module docstring.

    Known findings are not sent again once they would hide others: a second session-init for a
    session whose first init the target holds for observation (the target loses the first one's
    delivery, un-acked until JetStream redelivers it) is skipped and counted.

    Args:
        fuzzer: the NATS side.
        target: the node under attack.
        arena: what the mutations know (its corpus is fed by the fuzzer's tap).
        oracle: what must become of each message.
        start_honest: starts honest flows (involving the target) and says their results.
        honest_per_batch: honest flows started with every batch of the attack.
        others: honest nodes whose flows must end too.
    """

    def __init__(
        self,
        fuzzer: Fuzzer,
        target: Target,
        arena: Arena,
        oracle: Oracle,
        start_honest: StartHonest,
        *,
        honest_per_batch: int = 2,
        others: Sequence[Target] = (),
    ) -> None:
        self.fuzzer, self.target, self.arena, self.oracle = fuzzer, target, arena, oracle
        self.start_honest, self.honest_per_batch = start_honest, honest_per_batch
        self.others = others
        self.report = Report()
        self._honest: list[tuple[int, Future[Any], object]] = []
        #: Responder flow ids of the attacker's accepted inits, and of those held un-acked.
        self._attacker_flows: set[str] = set()
        self._held: set[str] = set()
        self._baseline: dict[str, int] = {}
        self._began = 0.0
        fuzzer.tap(arena.corpus)

    def _start_honest(self, count: int) -> None:
        for _ in range(count):
            n = len(self._honest)
            future, expected = self.start_honest(n)
            self._honest.append((n, future, expected))

    def prepare(self, flows: int = 10, sessions: int = 8, timeout: float = 60.0) -> None:
        """Run ``flows`` honest flows to the end (the corpus), have the attacker open ``sessions``
        sessions the way honest peers do (copies of their inits), then take the baseline."""
        corpus = self.arena.corpus
        self._start_honest(flows)
        for _, future, _ in self._honest:
            future.result(timeout)
        wait_until(lambda: corpus.absorb() >= 0 and bool(corpus.inits), timeout)
        templates = [i for i in corpus.inits if i.first_payload is not None]
        attacker, target = self.arena.attacker.name, self.arena.target
        opening = []
        for n in range(sessions if templates else 0):
            template, session = templates[n % len(templates)], f"{uuid.uuid4().hex}.0"
            init = replace(template, initiator_session=session)
            envelope = Envelope(ids.message_id(session, 0), attacker, target, init)
            opening.append(as_attacker(self.arena, encode_envelope(envelope)))
            self._attacker_flows.add(responder_flow_id(attacker, session))
        self.fuzzer.publish(opening)
        wait_until(
            lambda: corpus.absorb() >= 0 and len(corpus.attacker_sessions) >= len(opening), timeout
        )
        self._baseline = self.target.stats()
        self._began = time.monotonic()

    def batch(self, choices: Choices, size: int) -> list[Hostile]:
        """``size`` hostile messages from ``choices`` (on the current corpus)."""
        self.arena.corpus.absorb()
        return [hostile(self.arena, choices) for _ in range(size)]

    def attack(self, hostiles: Sequence[Hostile], *, learn: bool = True) -> None:
        """Publish ``hostiles`` (and start a few honest flows); count what must become of them.

        Args:
            hostiles: the messages.
            learn: add the traffic captured meanwhile to the corpus (``False`` keeps the corpus
                as it is, for Hypothesis, whose draws must not depend on what changes between
                examples).
        """
        self._start_honest(self.honest_per_batch)
        judged = []
        for item in hostiles:
            outcome, envelopes = self.oracle.outcome(item.message)
            held = self.oracle.held(envelopes)
            if held & self._held:
                self.report.skipped_known += 1
                continue
            self._held |= held
            judged.append((item, outcome, envelopes))
        duplicates = self.fuzzer.publish([item.message for item, _, _ in judged])
        for (item, outcome, envelopes), duplicate in zip(judged, duplicates, strict=True):
            self._count(item, outcome, envelopes, duplicate=duplicate)
        if learn:
            self.arena.corpus.absorb()

    def _count(
        self, item: Hostile, outcome: str, envelopes: list[Envelope], *, duplicate: bool
    ) -> None:
        report = self.report
        report.tried += 1
        report.by_mutation[item.mutation] += 1
        if duplicate:
            report.dropped_by_stream += 1
            return
        report.expected[outcome] += 1
        if outcome.startswith("crash:"):
            report.crashes.append(f"decoder {outcome} on {item.mutation}: {item.note}")
        report.inits_held += len(self.oracle.held(envelopes))
        for envelope in envelopes:
            if isinstance(envelope.body, Init) and envelope.sender == self.arena.attacker.name:
                flow_id = responder_flow_id(envelope.sender, envelope.body.initiator_session)
                self._attacker_flows.add(flow_id)

    def finish(self, timeout: float = 120.0, drain_timeout: float = 10.0) -> Report:
        """Run honest flows once more, wait for everything, check, and report.

        Args:
            timeout: bound on each wait for the honest flows and the refusals.
            drain_timeout: how long to wait for the consumer to drain once the attacker's flows
                and held inits are killed; what is left un-acked then is explained (the known
                finding of :meth:`_leftovers`) or stuck.
        """
        report = self.report
        self._start_honest(self.honest_per_batch * 2)
        report.honest_flows = len(self._honest)
        self._check_honest(timeout)
        self._settle(timeout)
        report.seconds = time.monotonic() - self._began
        self._release(drain_timeout)
        self._leftovers()
        self._check_flows()
        self._check_alive()
        report.consumer = self.fuzzer.consumer_state(self.arena.target)
        return report

    def _check_honest(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for n, future, expected in self._honest:
            try:
                result = future.result(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self.report.stuck.append(f"honest flow {n} did not finish")
            except Exception as exc:
                self.report.corrupted.append(f"honest flow {n} failed: {exc!r}")
            else:
                if result != expected:
                    self.report.corrupted.append(f"honest flow {n}: {result!r} != {expected!r}")

    def _refused(self) -> dict[str, int]:
        stats = self.target.stats()
        return {r: stats[f"refused_{r}"] - self._baseline.get(f"refused_{r}", 0) for r in REASONS}

    def _settle(self, timeout: float) -> None:
        """Wait until the target was handed everything and its refusals add up to the oracle's."""
        expected = sum(n for r, n in self.report.expected.items() if r in REASONS)

        def settled() -> bool:
            if self.fuzzer.consumer_state(self.arena.target)[1] != 0:
                return False
            return sum(self._refused().values()) >= expected

        with contextlib.suppress(TimeoutError):  # what is missing shows in the report
            wait_until(settled, timeout)
        self.report.refused = self._refused()

    def _release(self, timeout: float) -> None:
        """Kill what the attacker left waiting for it and the inits held for observation (an
        operator's way out) until the consumer is drained, or ``timeout`` passed."""
        left: set[str] = set()
        released: set[str] = set()

        def done() -> bool:
            waiting = {f.flow_id for f in self.target.flows(FlowStatus.RUNNABLE)}
            for flow_id in waiting & self._attacker_flows - left:
                if self.target.kill_flow(flow_id):
                    left.add(flow_id)
            for flow_id in self._held - waiting:
                for _ in range(3):  # a flow started under the held init's id, then the init
                    if not self.target.kill_flow(flow_id):
                        break
                    released.add(flow_id)
            self.report.attacker_flows_left = len(left)
            self.report.inits_released = len(released)
            if self.fuzzer.consumer_state(self.arena.target) != (0, 0):
                return False
            # a kill is asynchronous: done once the killed flows are gone (a loaded machine
            # takes a while), and none the attacker opened is still waiting
            still = {f.flow_id for f in self.target.flows(FlowStatus.RUNNABLE)}
            return not still & self._attacker_flows

        with contextlib.suppress(TimeoutError):
            wait_until(done, timeout, every=0.1)

    def _leftovers(self) -> None:
        """Explain what is still un-acked: a message to a flow that has ended is *stranded* (a
        known finding: it reached the flow while the commit that ended it was in flight, and the
        node acks it only when JetStream redelivers it, after ``ack_wait``); anything else is
        stuck."""
        alive = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        running = {f.flow_id for f in self.target.flows() if f.status in alive}
        for message in self.fuzzer.stored(self.arena.target):
            outcome, envelopes = self.oracle.outcome(message)
            flows = {flow_id_for(e) for e in envelopes}
            what = f"{message.msg_id}: {outcome} {[e.kind for e in envelopes]}"
            if outcome == ACCEPTED and not flows & running and not self.oracle.held(envelopes):
                self.report.stranded.append(what)
            else:
                self.report.stuck.append(f"un-acked {what}")

    def _check_flows(self) -> None:
        """Anything still running or hospitalized is stuck (the attacker's failed flows aside)."""
        running = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        self.report.stuck += [
            f"{f.flow_id} {f.flow_class} {f.status.name}: {f.waiting_for}"
            for node in (self.target, *self.others)
            for f in node.flows()
            if f.status in running
        ]
        for record in self.target.hospital_records():
            attackers = record.flow_id in self._attacker_flows
            if attackers and record.outcome is Outcome.PROPAGATE:
                self.report.attacker_flows_failed += 1  # it failed, and told the attacker
            else:
                whose = "the attacker's" if attackers else "honest"
                self.report.stuck.append(
                    f"{whose} flow {record.flow_id} hospitalized ({record.outcome}): "
                    f"{record.error_type}: {record.message[:200]}"
                )

    def _check_alive(self) -> None:
        for node in (self.target, *self.others):
            if not node.running:
                self.report.crashes.append(f"{node!r} is not running")
            try:
                node.stats(timeout=10)
            except Exception as exc:
                self.report.crashes.append(f"{node!r}.stats() failed: {exc!r}")


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.02) -> None:
    """Poll ``check`` until true; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s")
        threading.Event().wait(every)
