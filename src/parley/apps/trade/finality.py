"""Finality: notarise a fully signed transaction, record it, and send it to the participants.

Rules:

* ``Finality`` runs on the sessions its caller already has with the participants (as Corda 4's
  ``FinalityFlow``); each of them runs ``ReceiveFinality`` on its end. Every owner of an output
  other than this node must have a session: nobody learns of their new state any other way.
* The transaction must carry every signature but the notary's. It is notarised only if it needs
  to be (it has inputs or a time window: an issue has neither).
* Recording is a set of vault writes: they commit with the checkpoint of the send to the
  participants (or, with no participant, with the flow's end), so a node never tells a
  participant about a transaction it has not recorded itself.
* ``ReceiveFinality`` accepts only the transaction it expects (the one it signed), checks every
  signature, the notary's included, and the history it verified before, then records it.
"""

from __future__ import annotations

from parley import FlowLogic, FlowSession, ProgressTracker, Step
from parley.apps.trade.contracts import (
    TransactionVerificationException,
    check_signatures,
    needs_notary,
    verify_chain,
)
from parley.apps.trade.notary import Notarise
from parley.apps.trade.states import SignedTransaction
from parley.apps.trade.vault import Vault


class Finality(FlowLogic[SignedTransaction]):
    """Notarise ``stx`` (if needed), record it with its ``history``, send it to ``sessions``."""

    NOTARISING = Step("Requesting signature by notary service")
    RECORDING = Step("Recording transaction locally")
    BROADCASTING = Step("Broadcasting transaction to participants")
    progress_tracker = ProgressTracker(NOTARISING, RECORDING, BROADCASTING)

    def __init__(
        self,
        stx: SignedTransaction,
        sessions: list[FlowSession],
        history: tuple[SignedTransaction, ...] = (),
    ) -> None:
        self.stx, self.sessions, self.history = stx, sessions, history

    async def call(self) -> SignedTransaction:
        stx, me = self.stx, self.our_identity
        check_signatures(stx, self.services.identity.verify, allowed_missing={stx.tx.notary})
        told = {session.counterparty for session in self.sessions}
        untold = {s.owner for s in stx.tx.outputs} - told - {me}
        if untold:
            raise TransactionVerificationException(
                f"no session to {sorted(untold)}, who own outputs", stx.id
            )
        if needs_notary(stx.tx):
            self.progress_tracker.current_step = self.NOTARISING
            stx = await self.sub_flow(Notarise(stx))
        self.progress_tracker.current_step = self.RECORDING
        Vault(self).record(stx, self.history)
        self.progress_tracker.current_step = self.BROADCASTING
        if self.sessions:
            await self.send_all(stx, self.sessions)
        return stx


class ReceiveFinality(FlowLogic[SignedTransaction]):
    """Receive the finished transaction ``expected_tx_id`` from the session, check, record it.

    Args:
        session: the session to the node running ``Finality``.
        expected_tx_id: the id of the transaction this node agreed to.
        history: the verified history of its inputs (``SignTransaction.history``).
    """

    def __init__(
        self,
        session: FlowSession,
        expected_tx_id: str,
        history: tuple[SignedTransaction, ...] = (),
    ) -> None:
        self.session, self.expected_tx_id, self.history = session, expected_tx_id, history

    async def call(self) -> SignedTransaction:
        stx = (await self.session.receive(SignedTransaction)).unwrap(self._check)
        Vault(self).record(stx, self.history)
        # Recorded with the flow's next checkpoint: the caller's next suspension, or its end.
        return stx

    def _check(self, stx: SignedTransaction) -> SignedTransaction:
        if stx.id != self.expected_tx_id:
            raise TransactionVerificationException(
                f"expected transaction {self.expected_tx_id[:12]}, received {stx.id[:12]}", stx.id
            )
        # The contracts and every signature of stx (the notary's included), on its history.
        verify_chain(stx, self.history, self.services.identity.verify)
        return stx


__all__ = ["Finality", "ReceiveFinality"]
