"""A fuzzer for running nodes: hostile messages made from real traffic, published over raw NATS.

Rules of the module, by section:

* **Mutations are pure.** :func:`hostile` turns an :class:`Arena` (the target's name, the parties'
  keys, a :class:`Corpus` of captured traffic) and a source of :class:`Choices` into one
  :class:`Hostile` message. Every decision comes from the choices, so the same choices give the
  same message: :class:`RandomChoices` over a seeded ``random.Random`` for long runs, Hypothesis'
  ``draw`` in tests. Every hostile message goes to the target's stream
  (``parley.p2p.<target>.<something>``) and fits in one NATS message.
* **The oracle says what must become of each message** (:meth:`Oracle.outcome`): refused, and for
  which reason of ``transport.router.REASONS``, or accepted. It checks subject, signature
  (against the same network map the node reads), decoding and addressing in the router's order,
  with the library's own checks: it does not prove them right, it lets the node's counters be
  compared message for message. A decoder that raises anything but ``DeserializationError`` is
  reported as ``crash:<exception>``.
* **The driver** (:class:`Fuzzer`) is a plain nats-py client on its own loop thread: it taps
  ``parley.p2p.>`` for the corpus (never seeing its own messages), publishes hostile messages to
  JetStream (a copy JetStream drops as a duplicate id is not delivered, and not counted), and reads
  a node's consumer state.
* **A campaign** (:class:`Campaign`) attacks one node while honest flows run before, during and
  after, then checks what must hold and returns a :class:`Report`: no crash (the node runs,
  answers ``stats()``, logs no error), no honest flow corrupted or stuck, nothing hospitalized,
  nothing left running, the consumer drained, and the refusals equal to the oracle's, reason by
  reason. Flows the attacker opened and left waiting for it are killed at the end and counted.

The modules, in that order: :mod:`~parley.testing.fuzz.corpus` (what the mutations work on),
:mod:`~parley.testing.fuzz.choices`, :mod:`~parley.testing.fuzz.rawcbor` (CBOR the codec would
refuse to write), :mod:`~parley.testing.fuzz.mutations`, :mod:`~parley.testing.fuzz.oracle`,
:mod:`~parley.testing.fuzz.driver` and :mod:`~parley.testing.fuzz.campaign`. Every name used
from outside is imported from here.
"""

from parley.testing.fuzz.campaign import (
    Campaign,
    ErrorLog,
    Report,
    StartHonest,
    Target,
    wait_until,
)
from parley.testing.fuzz.choices import Choices, RandomChoices
from parley.testing.fuzz.corpus import (
    ACCEPTED,
    MAX_PUBLISH,
    Arena,
    Captured,
    Corpus,
    Hostile,
    Message,
    Party,
)
from parley.testing.fuzz.driver import Fuzzer
from parley.testing.fuzz.mutations import MUTATIONS, forge, hostile
from parley.testing.fuzz.oracle import Oracle

__all__ = [
    "ACCEPTED",
    "MAX_PUBLISH",
    "MUTATIONS",
    "Arena",
    "Campaign",
    "Captured",
    "Choices",
    "Corpus",
    "ErrorLog",
    "Fuzzer",
    "Hostile",
    "Message",
    "Oracle",
    "Party",
    "RandomChoices",
    "Report",
    "StartHonest",
    "Target",
    "forge",
    "hostile",
    "wait_until",
]
