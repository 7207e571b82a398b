"""What the fuzzer's mutations work on: messages, parties, captured traffic and the arena.

Plain data, no decisions: :class:`Corpus` collects what :class:`Fuzzer`'s tap offers
(:mod:`parley.testing.fuzz.driver`), and :class:`Arena` is what every mutation
(:mod:`parley.testing.fuzz.mutations`) is handed.
"""

from __future__ import annotations

import collections
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from parley.identity.keys import KeyPair
from parley.identity.signing import MessageSigner
from parley.protocol import codec
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import Confirm, Data, Envelope, Init, decode_envelopes
from parley.transport.names import SUBJECT_PREFIX

ACCEPTED: Final = "accepted"
#: Largest payload a hostile message gets (NATS' default max_payload is 1 MiB; headers need room).
MAX_PUBLISH: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Message:
    """A NATS message: subject, payload, signature header, ``Nats-Msg-Id`` (None: a fresh one)."""

    subject: str
    data: bytes
    signature: str | None = None
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class Hostile:
    """A message made by a mutation; ``intent`` is the outcome it aims for, if it is certain."""

    mutation: str
    message: Message
    note: str
    intent: str | None = None


@dataclass(frozen=True, slots=True)
class Party:
    """A node name and the key it signs with."""

    name: str
    key: KeyPair

    def sign(self, data: bytes) -> str:
        return MessageSigner(self.key)(data)


@dataclass(frozen=True, slots=True)
class Captured:
    """A message seen on the wire, with its envelopes."""

    message: Message
    envelopes: tuple[Envelope, ...]

    @property
    def kind(self) -> str:
        return self.envelopes[0].kind if len(self.envelopes) == 1 else "batch"


class Corpus:
    """Captured traffic, by kind, and what it teaches: the target's session ids, payloads, inits.

    :meth:`offer` may be called from any thread; :meth:`absorb` (on the generating thread) takes
    what was offered. Each list keeps its newest ``limit`` items, so old sessions stay to be
    replayed into new ones.
    """

    def __init__(self, target: str, attacker: str, limit: int = 256) -> None:
        self.target, self.attacker = target, attacker
        self._offered: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.by_kind: dict[str, collections.deque[Captured]] = collections.defaultdict(
            lambda: collections.deque(maxlen=limit)
        )
        self.sessions: collections.deque[str] = collections.deque(maxlen=limit)
        self.attacker_sessions: collections.deque[str] = collections.deque(maxlen=limit)
        self.payloads: collections.deque[bytes] = collections.deque(maxlen=limit)
        self.inits: collections.deque[Init] = collections.deque(maxlen=limit)

    def offer(self, message: Message) -> None:
        self._offered.put(message)

    def absorb(self) -> int:
        """Take the messages offered so far; returns how many decoded."""
        count = 0
        while True:
            try:
                message = self._offered.get_nowait()
            except queue.Empty:
                return count
            count += self.add(message)

    def add(self, message: Message) -> bool:
        try:
            envelopes = tuple(decode_envelopes(message.data))
        except DeserializationError:
            return False
        captured = Captured(message, envelopes)
        self.by_kind[captured.kind].append(captured)
        for envelope in envelopes:
            self._learn(envelope)
        return True

    def _learn(self, envelope: Envelope) -> None:
        body = envelope.body
        if isinstance(body, Init):
            self.inits.append(body)
            if body.first_payload is not None:
                self.payloads.append(body.first_payload)
            if envelope.sender == self.target:
                self.sessions.append(body.initiator_session)
        elif envelope.recipient == self.target:
            self.sessions.append(body.session)
        if isinstance(body, Confirm) and envelope.sender == self.target:
            mine = self.attacker_sessions if envelope.recipient == self.attacker else self.sessions
            mine.append(body.initiated_session)
        if isinstance(body, Data):
            self.payloads.append(body.payload)

    def __len__(self) -> int:
        return sum(map(len, self.by_kind.values()))


@dataclass
class Arena:
    """What the mutations know: the target, the attacker (an admitted node), outsiders, traffic.

    ``stranger`` was never admitted; ``revoked`` was admitted and then revoked; ``peers`` are
    honest nodes whose names the attacker may claim (it does not have their keys).
    """

    target: str
    attacker: Party
    stranger: Party
    corpus: Corpus
    revoked: Party | None = None
    peers: Sequence[str] = ()
    max_size: int = codec.DEFAULT_MAX_SIZE

    def subject(self, sender: str) -> str:
        return f"{SUBJECT_PREFIX}.{self.target}.{sender}"
