"""The fuzzer against a real node on a real nats-server, and what it found.

alice (attacked) and bob (honest) are admitted by an operator and run Ping rounds both ways before,
during and after the attack. mallory is admitted too and holds its key: it is the attacker; trudy
was admitted and revoked; eve never was. The hostile messages are drawn by Hypothesis
(:func:`tests.testing.test_fuzz_mutations.hostile_messages`) from the traffic captured so far;
the network is :func:`bench.fuzz.battlefield`, whose ``python -m bench.fuzz`` is the long run of
the same campaign with a seeded ``random.Random``.

The tests at the end reproduce what the fuzzer found; they are strict xfails until it is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.fuzz import ROUNDS, Battlefield, battlefield
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from parley.apps.pingpong import Ping
from parley.engine.handles import responder_flow_id
from parley.protocol import codec
from parley.protocol.messages import Data, Envelope, Init, encode_envelope
from parley.protocol.records import PutFlowResult, StoreOp
from parley.testing import MockNetwork
from parley.testing.fuzz import MUTATIONS, Message, Party
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.nodes import wait_for
from tests.testing.test_fuzz_mutations import hostile_messages

pytestmark = pytest.mark.integration

#: Hostile messages per Hypothesis example (200 still fit in one; 300 do not), and examples.
BATCH = 100
EXAMPLES = 105


@pytest.fixture
def field(tmp_path: Path, nats_server: EmbeddedNatsServer) -> Iterator[Battlefield]:
    assert nats_server.url is not None
    with battlefield(tmp_path, nats_server.url, honest_per_batch=1) as made:
        yield made


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ten_thousand_hostile_messages_crash_nothing_and_every_one_is_accounted_for(
    field: Battlefield, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="parley")  # a WARNING per refusal costs time here
    campaign = field.campaign
    campaign.prepare(flows=20)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # shrinking would replay against a node already changed
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def attack(data: st.DataObject) -> None:
        batch = st.lists(hostile_messages(campaign.arena), min_size=BATCH, max_size=BATCH)
        campaign.attack(data.draw(batch), learn=False)

    attack()
    report = field.finish(timeout=120)  # the campaign's report and what was logged
    print(report.render())
    assert report.tried >= 10_000
    assert set(report.by_mutation) == set(MUTATIONS)
    assert report.crashes == []
    assert report.corrupted == []
    assert report.stuck == [], "a flow still runs, is hospitalized, or a message is un-acked"
    assert report.mismatches == {}, "the node's refusals differ from the oracle's"
    assert report.undrained == 0, "un-acked or pending beyond the known stranded messages"
    assert field.alice.stats()["live"] == 0


# ---- what the fuzzer found ---------------------------------------------------------------------


def init_from(mallory: Party, session: str, flow_class: str) -> Message:
    envelope = Envelope(f"{session}:0", mallory.name, "alice", Init(session, flow_class, 1, "x"))
    data = encode_envelope(envelope)
    return Message(f"parley.p2p.alice.{mallory.name}", data, mallory.sign(data))


def drained(field: Battlefield) -> bool:
    return field.fuzzer.consumer_state("alice") == (0, 0)


def test_an_admitted_peers_init_for_a_class_the_node_never_heard_of_is_acked(
    field: Battlefield,
) -> None:
    field.fuzzer.publish([init_from(field.mallory, "a" * 32 + ".0", "no.such:Flow")])
    wait_for(lambda: drained(field), 5, "the init to be acked")


def test_killing_an_init_held_twice_acks_both_copies(field: Battlefield) -> None:
    session = "a" * 32 + ".0"
    field.fuzzer.publish([init_from(field.mallory, session, "no.such:Flow")])
    field.fuzzer.publish([init_from(field.mallory, session, "no.such:Other")])
    wait_for(lambda: drained(field), 5, "both copies to be acked (the first is stored)")
    assert field.alice.kill_flow(responder_flow_id(field.mallory.name, session))
    assert not field.alice.kill_flow(responder_flow_id(field.mallory.name, session))


def test_a_message_that_arrives_while_a_flows_last_commit_is_in_flight_is_acked() -> None:
    net = MockNetwork()
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Ping("bob", 1), client_id="c")  # its result is committed last
    commit = alice.runtime.ports.commit
    held: list[Any] = []

    def hold_the_result(ops: tuple[StoreOp, ...], done: Any) -> None:
        if any(isinstance(op, PutFlowResult) for op in ops) and not held:
            held.append((ops, done))
        else:
            commit(ops, done)

    alice.runtime.ports.commit = hold_the_result  # type: ignore[method-assign]
    net.run_network()
    assert held, "the flow's last commit is in flight"
    reply = next(t for t in net.published if t.sender == "bob" and isinstance(t.message, Data))
    net.inject("alice", encode_envelope(Envelope(reply.id, "bob", "alice", reply.message)))
    net.run_network()
    commit(*held.pop())
    net.run_network()
    assert handle.result() == 2
    assert alice.in_flight == {}, "deliveries never acked"


def test_a_hostile_init_naming_the_ping_class_starts_a_responder_the_campaign_can_kill(
    field: Battlefield,
) -> None:
    """The attacker's sessions are real ones: what it leaves waiting, the end of a run kills."""
    first = codec.encode((ROUNDS, 1))  # the responder answers, then waits for two more rounds
    envelope = Envelope(
        "m:0", "mallory", "alice", Init("m.0", "parley.apps.pingpong:Ping", 1, "x", first)
    )
    data = encode_envelope(envelope)
    field.fuzzer.publish([Message("parley.p2p.alice.mallory", data, field.mallory.sign(data))])
    flow_id = responder_flow_id("mallory", "m.0")
    wait_for(lambda: any(f.flow_id == flow_id for f in field.alice.flows()), 10, "the responder")
    wait_for(lambda: drained(field), 10, "the init to be acked")
    assert field.alice.kill_flow(flow_id)
    wait_for(lambda: field.alice.flows() == [], 10, "the killed responder to go")
