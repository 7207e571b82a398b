"""The fuzzer's pure part: its mutations, made reproducibly from traffic, and its oracle.

The arena here is built by hand (no NATS): honest traffic between alice and bob, signed by their
keys, and a network map that admits alice, bob and the attacker mallory, has revoked trudy and
has never heard of eve. :func:`hostile_messages` is the Hypothesis strategy the integration test
draws from too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.apps.pingpong import Ping
from parley.engine.handles import responder_flow_id
from parley.flows.registry import FlowRegistry
from parley.identity.keys import KeyPair, new_operator_key
from parley.identity.netmap import NetworkMap, NodeEntry, NodeStatus, new_serial, sign_entry
from parley.protocol import codec
from parley.protocol.errors import type_name
from parley.protocol.messages import (
    MAX_BATCH,
    Confirm,
    Data,
    End,
    Envelope,
    Init,
    SessionMessage,
    encode_batch,
    encode_envelope,
)
from parley.testing.fuzz import (
    ACCEPTED,
    MAX_PUBLISH,
    MUTATIONS,
    Arena,
    Corpus,
    Hostile,
    Message,
    Oracle,
    Party,
    RandomChoices,
    forge,
    hostile,
)
from parley.transport.router import REASONS

PING = type_name(Ping)
MAX_SIZE = 256 * 1024
KEYS = {name: KeyPair.generate() for name in ("alice", "bob", "mallory", "trudy", "eve")}
OPERATOR = new_operator_key()


class DrawChoices:
    """The fuzzer's choices, drawn by Hypothesis (so it shrinks them)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))


@st.composite
def hostile_messages(draw: st.DrawFn, arena: Arena, mutation: str | None = None) -> Hostile:
    """One hostile message for ``arena``'s target, every choice drawn by Hypothesis."""
    return hostile(arena, DrawChoices(draw), mutation)


def network_map() -> NetworkMap:
    found = NetworkMap(OPERATOR.public_key)
    for name in ("alice", "bob", "mallory", "trudy"):
        status = NodeStatus.REVOKED if name == "trudy" else NodeStatus.ADMITTED
        entry = NodeEntry(name, (KEYS[name].public_key,), status, new_serial(), (), ())
        found.accept(sign_entry(OPERATOR, entry))
    return found


def signed(sender: str, recipient: str, *bodies: SessionMessage) -> Message:
    envelopes = [Envelope(f"{sender}-{n}", sender, recipient, b) for n, b in enumerate(bodies)]
    data = encode_envelope(envelopes[0]) if len(envelopes) == 1 else encode_batch(envelopes)[1]
    subject = f"parley.p2p.{recipient}.{sender}"
    return Message(subject, data, Party(sender, KEYS[sender]).sign(data), f"{sender}:{len(data)}")


def traffic() -> Iterator[Message]:
    """A Ping each way between alice and bob, and one the attacker opened with alice."""
    a, b, m = "a" * 32, "b" * 32, "c" * 32
    yield signed("bob", "alice", Init(f"{b}.0", PING, 1, "app", codec.encode((1, 4))))
    yield signed("alice", "bob", Confirm(f"{b}.0", f"{a}.0", 1, "app"), Data(f"{b}.0", 1, b"\x05"))
    yield signed("alice", "bob", Init(f"{a}.1", PING, 1, "app", codec.encode((1, 7))))
    yield signed("bob", "alice", Confirm(f"{a}.1", f"{b}.1", 1, "app"), Data(f"{a}.1", 1, b"\x08"))
    yield signed("bob", "alice", End(f"{a}.1", 2))
    yield signed("alice", "mallory", Confirm(f"{m}.0", f"{a}.2", 1, "app"))


@pytest.fixture(scope="module")
def arena() -> Arena:
    corpus = Corpus("alice", "mallory")
    for message in traffic():
        assert corpus.add(message)
    parties = {name: Party(name, key) for name, key in KEYS.items()}
    return Arena(
        "alice", parties["mallory"], parties["eve"], corpus, parties["trudy"], ["bob"], MAX_SIZE
    )


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle(
        "alice", network_map(), MAX_SIZE, FlowRegistry.from_apps(["parley.apps.pingpong"])
    )


# ---- the corpus -------------------------------------------------------------------------------


def test_the_corpus_learns_the_targets_sessions_from_both_directions(arena: Arena) -> None:
    corpus = arena.corpus
    assert set(corpus.sessions) >= {"a" * 32 + ".0", "a" * 32 + ".1"}
    assert list(corpus.attacker_sessions) == ["a" * 32 + ".2"]
    assert {k for k, items in corpus.by_kind.items() if items} == {
        "init",
        "end",
        "batch",
        "confirm",
    }
    assert [i.flow_class for i in corpus.inits] == [PING, PING]


def test_the_corpus_takes_only_what_decodes() -> None:
    corpus = Corpus("alice", "mallory")
    corpus.offer(Message("parley.p2p.alice.bob", b"\xff"))
    corpus.offer(signed("bob", "alice", End("x.0", 1)))
    assert corpus.absorb() == 1
    assert len(corpus) == 1


# ---- mutations: reproducible, well-formed as NATS messages ------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_seed_makes_the_same_messages(arena: Arena, seed: int) -> None:
    first = [hostile(arena, RandomChoices(random.Random(seed))) for _ in range(200)]
    again = [hostile(arena, RandomChoices(random.Random(seed))) for _ in range(200)]
    assert first == again


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_hostile_message_goes_to_the_targets_stream_and_fits_in_one_nats_message(
    arena: Arena, data: st.DataObject
) -> None:
    item = data.draw(hostile_messages(arena))
    subject = item.message.subject
    assert subject.startswith("parley.p2p.alice.")
    assert not subject.endswith(".")
    assert not {" ", "*", ">"} & set(subject)
    assert len(item.message.data) <= MAX_PUBLISH
    assert item.mutation in MUTATIONS


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_oracle_gives_every_hostile_message_a_reason_or_accepts_it(
    arena: Arena, oracle: Oracle, data: st.DataObject
) -> None:
    """A decoder that raised anything but DeserializationError would show as ``crash:...``."""
    item = data.draw(hostile_messages(arena))
    outcome, envelopes = oracle.outcome(item.message)
    assert outcome in {*REASONS, ACCEPTED}, (item.note, outcome)
    assert bool(envelopes) == (outcome == ACCEPTED)


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutation_that_names_its_outcome_gets_it(
    arena: Arena, oracle: Oracle, data: st.DataObject
) -> None:
    item = data.draw(hostile_messages(arena))
    if item.intent is not None:
        assert oracle.outcome(item.message)[0] == item.intent, item.note


@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_hypothesis_example_holds_a_batch_of_a_hundred_messages(
    arena: Arena, data: st.DataObject
) -> None:
    """The integration test draws its batches like this: they must fit in one example."""
    batch = data.draw(st.lists(hostile_messages(arena), min_size=100, max_size=100))
    assert len(batch) == 100


def test_a_long_run_makes_every_mutation_every_kind_and_every_reason(
    arena: Arena, oracle: Oracle
) -> None:
    choices = RandomChoices(random.Random(7))
    made = [hostile(arena, choices) for _ in range(3000)]
    assert {h.mutation for h in made} == set(MUTATIONS)
    outcomes = Counter(oracle.outcome(h.message)[0] for h in made)
    assert set(outcomes) == {*REASONS, ACCEPTED}, outcomes
    kinds = {forge(arena, choices).kind for _ in range(200)}
    assert kinds == {"init", "confirm", "data", "error", "reject", "end"}


# ---- the oracle, case by case ------------------------------------------------------------------


def as_mallory(data: bytes, subject_sender: str = "mallory") -> Message:
    return Message(
        f"parley.p2p.alice.{subject_sender}", data, Party("mallory", KEYS["mallory"]).sign(data)
    )


def batch_of(items: list[bytes]) -> bytes:
    header = {"v": 1, "id": "b", "sender": "mallory", "recipient": "alice", "kind": "batch"}
    return codec.encode({**header, "body": items})


END = Envelope("m-1", "mallory", "alice", End("a" * 32 + ".2", 1))
FROM_BOB = Envelope("x", "bob", "alice", END.body)
TOO_BIG = Envelope("m", "mallory", "alice", Data("s.0", 1, bytes(MAX_SIZE)))
CASES = {
    "a valid message from the attacker": (as_mallory(encode_envelope(END)), ACCEPTED),
    "unsigned": (Message("parley.p2p.alice.mallory", encode_envelope(END)), "unsigned"),
    "signed by another admitted node": (as_mallory(encode_envelope(END), "bob"), "bad_signature"),
    "claiming another sender": (
        as_mallory(encode_envelope(Envelope("m-1", "bob", "alice", END.body))),
        "subject_mismatch",
    ),
    "for another node": (
        as_mallory(encode_envelope(Envelope("m-1", "mallory", "bob", END.body))),
        "wrong_recipient",
    ),
    "a subject with two tokens for the sender": (
        Message("parley.p2p.alice.a.b", encode_envelope(END)),
        "bad_subject",
    ),
    "a subject of another node's stream": (
        Message("parley.p2p.bob.mallory", encode_envelope(END)),
        "bad_subject",
    ),
    "from a revoked node": (
        Message("parley.p2p.alice.trudy", b"x", Party("trudy", KEYS["trudy"]).sign(b"x")),
        "revoked_node",
    ),
    "from a stranger": (
        Message("parley.p2p.alice.eve", b"x", Party("eve", KEYS["eve"]).sign(b"x")),
        "unknown_node",
    ),
    "an empty batch": (as_mallory(batch_of([])), "undecodable"),
    "a batch of 1001": (
        as_mallory(batch_of([encode_envelope(END)] * (MAX_BATCH + 1))),
        "undecodable",
    ),
    "a batch of 1000": (as_mallory(batch_of([encode_envelope(END)] * MAX_BATCH)), ACCEPTED),
    "a batch with another sender inside": (
        as_mallory(
            batch_of(
                [encode_envelope(END), encode_envelope(Envelope("x", "bob", "alice", END.body))]
            )
        ),
        "undecodable",
    ),
    "over the size limit": (
        as_mallory(
            encode_envelope(Envelope("m", "mallory", "alice", Data("s.0", 1, bytes(MAX_SIZE))))
        ),
        "undecodable",
    ),
    "10,000 nested arrays": (as_mallory(b"\x81" * 10_000 + b"\x00"), "undecodable"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_oracle_refuses_by_the_routers_reasons(oracle: Oracle, case: str) -> None:
    message, expected = CASES[case]
    assert oracle.outcome(message)[0] == expected


def test_the_oracle_knows_which_inits_the_node_holds_for_observation(oracle: Oracle) -> None:
    unknown = Envelope("m-1", "mallory", "alice", Init("s.0", "no.such:Flow", 1, "x"))
    served = Envelope("m-2", "mallory", "alice", Init("t.0", PING, 1, "x"))
    not_a_flow = Envelope(
        "m-3", "mallory", "alice", Init("u.0", "parley.apps.pingpong:Pong", 1, "x")
    )
    assert oracle.held([unknown, served, not_a_flow]) == {responder_flow_id("mallory", "s.0")}
