"""The oracle: what a target node must do with a message, refused (and why) or accepted.

It checks subject, signature, decoding and addressing in the router's order, with the
library's own checks, so that the node's counters can be compared message for message.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.engine.handles import responder_flow_id
from parley.flows.registry import FlowRegistry, SessionInitRejected, UnknownFlowClass
from parley.identity.netmap import NetworkMap
from parley.identity.signing import SIGNATURE_HEADER, MessageVerifier
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import Envelope, Init, decode_envelopes, is_node_name
from parley.testing.fuzz.corpus import ACCEPTED, Message
from parley.transport.names import SUBJECT_PREFIX


class Oracle:
    """What the target must do with a message: see the module docstring."""

    def __init__(
        self,
        target: str,
        network_map: NetworkMap,
        max_size: int,
        registry: FlowRegistry | None = None,
    ) -> None:
        """Judge messages to ``target``.

        Args:
            target: the node under attack.
            network_map: the map it reads (see :meth:`Fuzzer.network_map`).
            max_size: its ``max_message_size``.
            registry: its responders (what its apps register), to tell which session-inits it
                will hold for observation; ``None``: none are expected.
        """
        self.target, self.max_size, self.registry = target, max_size, registry
        self._verify = MessageVerifier(network_map).check
        self._prefix = f"{SUBJECT_PREFIX}.{target}."

    def held(self, envelopes: Sequence[Envelope]) -> set[str]:
        """The responder flow ids of the inits among ``envelopes`` that the target will hold,
        un-acked, for observation: they name a class it has never heard of."""
        found = set()
        for envelope in envelopes:
            body = envelope.body
            if self.registry is None or not isinstance(body, Init):
                continue
            try:
                self.registry.responder_for(body.flow_class)
            except UnknownFlowClass:
                found.add(responder_flow_id(envelope.sender, body.initiator_session))
            except SessionInitRejected:
                continue
        return found

    def outcome(self, message: Message) -> tuple[str, list[Envelope]]:
        """The refusal reason (or ``accepted``, or ``crash:...``) and the envelopes accepted."""
        sender = message.subject.removeprefix(self._prefix)
        if sender == message.subject or not is_node_name(sender):
            return "bad_subject", []
        headers = {SIGNATURE_HEADER: message.signature} if message.signature is not None else None
        refusal = self._verify(sender, message.data, headers)
        if refusal is not None:
            return refusal, []
        try:
            envelopes = decode_envelopes(message.data, max_size=self.max_size)
        except DeserializationError:
            return "undecodable", []
        except Exception as exc:  # the router would not contain this: a finding
            return f"crash:{type(exc).__name__}: {exc}"[:200], []
        for envelope in envelopes:
            if envelope.sender != sender:
                return "subject_mismatch", []
            if envelope.recipient != self.target:
                return "wrong_recipient", []
        return ACCEPTED, envelopes
