"""Collecting signatures: ``CollectSignatures`` asks, ``SignTransaction`` checks and signs.

Rules:

* Neither flow opens sessions: they run on the sessions of the flows that call them (as Corda's
  ``CollectSignaturesFlow`` / ``SignTransactionFlow`` take their sessions).
* The asker sends a :class:`SignatureRequest`: the transaction, with the signatures it has, and
  the history of its inputs, so that the signer can check where they come from
  (``contracts.verify_chain``). The signer checks the history, the contracts, every signature
  already on the transaction, and then its own conditions (:meth:`SignTransaction.check`), and
  answers with its signature. The asker checks that signature against the network map before it
  adds it.
* A signer that refuses raises a ``FlowException`` (``TransactionVerificationException`` or its
  own), which reaches the asker with its message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from parley import FlowLogic, FlowSession, ProgressTracker, Step, serializable
from parley.apps.trade.contracts import (
    TransactionVerificationException,
    required_signers,
    verify_chain,
)
from parley.apps.trade.states import SignedTransaction, TransactionSignature, signed_bytes


@serializable(name="parley.trade.SignatureRequest")
@dataclass(frozen=True)
class SignatureRequest:
    """A transaction to sign, and the transactions its inputs come from."""

    stx: SignedTransaction
    history: tuple[SignedTransaction, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.stx, SignedTransaction):
            raise ValueError(f"not a SignedTransaction: {self.stx!r}")
        if not isinstance(self.history, tuple) or not all(
            isinstance(h, SignedTransaction) for h in self.history
        ):
            raise ValueError("a history is a tuple of SignedTransaction")


class CollectSignatures(FlowLogic[SignedTransaction]):
    """Get the signature of the node behind each session, and return the transaction with them.

    Args:
        stx: the transaction, signed by this node.
        sessions: one session to each node that must sign.
        history: the transactions the inputs come from (``Vault.history``).
    """

    COLLECTING = Step("Collecting signatures from counterparties")
    VERIFYING = Step("Verifying collected signatures")
    progress_tracker = ProgressTracker(COLLECTING, VERIFYING)

    def __init__(
        self,
        stx: SignedTransaction,
        sessions: list[FlowSession],
        history: tuple[SignedTransaction, ...],
    ) -> None:
        self.stx, self.sessions, self.history = stx, sessions, history

    async def call(self) -> SignedTransaction:
        self.progress_tracker.current_step = self.COLLECTING
        stx = self.stx
        wanted = {s.counterparty for s in self.sessions}
        unasked = required_signers(stx.tx) - stx.signers - wanted - {stx.tx.notary}
        if unasked:
            raise TransactionVerificationException(
                f"no session to {sorted(unasked)}, who must sign", stx.id
            )
        request = SignatureRequest(stx, self.history)
        await self.send_all(request, self.sessions)
        replies = await self.receive_all(TransactionSignature, self.sessions)
        self.progress_tracker.current_step = self.VERIFYING
        for session, reply in zip(self.sessions, replies, strict=True):
            signature = reply.unwrap(functools.partial(self._check, who=session.counterparty))
            stx = stx.with_signature(signature)
        return stx

    def _check(self, signature: TransactionSignature, who: str) -> TransactionSignature:
        if signature.by != who:
            raise TransactionVerificationException(
                f"{who} answered with a signature by {signature.by}", self.stx.id
            )
        verify = self.services.identity.verify
        if not verify(who, signed_bytes(self.stx.id), signature.signature):
            raise TransactionVerificationException(
                f"the signature of {who} does not verify", self.stx.id
            )
        return signature


class SignTransaction(FlowLogic[SignedTransaction]):
    """Check a transaction the counterparty wants signed, sign it, send the signature back.

    Subclass it and override :meth:`check` with the conditions of the deal (Corda's
    ``SignTransactionFlow.checkTransaction``); it runs after the contracts, the history and the
    signatures already on the transaction have been checked. Returns the transaction with this
    node's signature (not yet notarised).
    """

    RECEIVING = Step("Receiving transaction proposal for signing")
    VERIFYING = Step("Verifying transaction proposal")
    SIGNING = Step("Signing transaction proposal")
    progress_tracker = ProgressTracker(RECEIVING, VERIFYING, SIGNING)

    def __init__(self, session: FlowSession) -> None:
        self.session = session
        #: The verified history of the transaction's inputs, by id (set once checked).
        self.history: dict[str, SignedTransaction] = {}

    async def call(self) -> SignedTransaction:
        self.progress_tracker.current_step = self.RECEIVING
        request = (await self.session.receive(SignatureRequest)).unwrap(self._verify)
        stx = request.stx
        self.progress_tracker.current_step = self.VERIFYING
        await self.check(stx)
        self.progress_tracker.current_step = self.SIGNING
        signature = TransactionSignature(
            self.our_identity, self.services.identity.sign(signed_bytes(stx.id))
        )
        await self.session.send(signature)
        return stx.with_signature(signature)

    def _verify(self, request: SignatureRequest) -> SignatureRequest:
        stx, me = request.stx, self.our_identity
        if me not in required_signers(stx.tx):
            raise TransactionVerificationException(f"{me} is not asked to sign", stx.id)
        self.history = verify_chain(
            stx,
            request.history,
            self.services.identity.verify,
            allowed_missing={me, stx.tx.notary},
        )
        return request

    async def check(self, stx: SignedTransaction) -> None:
        """Raise a ``FlowException`` if this node should not sign ``stx``. Signs anything valid
        by default."""


__all__ = ["CollectSignatures", "SignTransaction", "SignatureRequest"]
