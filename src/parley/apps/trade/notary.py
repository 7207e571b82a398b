"""The notary: it signs a transaction only if none of its inputs was consumed by another one.

Rules:

* ``Notarise`` (an initiating flow) sends the transaction to the notary it names and returns it
  with the notary's signature, checked against the network map.
* ``NotaryResponder`` is a *non-validating* notary, as Corda's simple notary: it does not check
  the contracts (the parties did), only that it is the notary the transaction names, that every
  other required signature is there and verifies, that its clock is inside the time window, and
  uniqueness: an input already committed for another transaction is refused with
  :class:`NotaryException` naming that transaction. Asking again for the same transaction gets
  the same answer (a retry after a crash is not a double spend).
* The committed refs are rows of ``notary_commits`` (primary key: the ref), queued with the
  flow's database and committed in the same SQLite transaction as the checkpoint that sends the
  signature: the notary never signs without having committed, and never commits without
  signing (a crash before the checkpoint loses both, and the request is processed again).
* Two requests for conflicting transactions running at once both read "not committed"; the
  second one's checkpoint then fails on the primary key, the flow hospital retries that flow
  from its last checkpoint, and the retry reads the first one's commit and refuses.
"""

from __future__ import annotations

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
)
from parley.apps.trade.contracts import TransactionVerificationException, check_signatures
from parley.apps.trade.states import SignedTransaction, TransactionSignature, signed_bytes
from parley.apps.trade.vault import VaultTable


class NotaryException(FlowException):
    """The notary refused: an input was consumed by ``conflicting_tx`` (empty for other
    refusals: a wrong notary, a missing signature, outside the time window)."""

    tx_id: str
    conflicting_tx: str
    ref: str

    def __init__(self, message: str, tx_id: str, conflicting_tx: str = "", ref: str = "") -> None:
        super().__init__(message)
        self.tx_id, self.conflicting_tx, self.ref = tx_id, conflicting_tx, ref


@initiating_flow
class Notarise(FlowLogic[SignedTransaction]):
    """Have the transaction's notary sign it; return it with the notary's signature."""

    REQUESTING = Step("Requesting signature by notary service")
    VALIDATING = Step("Validating response from notary service")
    progress_tracker = ProgressTracker(REQUESTING, VALIDATING)

    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx

    async def call(self) -> SignedTransaction:
        self.progress_tracker.current_step = self.REQUESTING
        session = self.initiate_flow(self.stx.tx.notary)
        reply = await session.send_and_receive(TransactionSignature, self.stx)
        self.progress_tracker.current_step = self.VALIDATING
        return self.stx.with_signature(reply.unwrap(self._check))

    def _check(self, signature: TransactionSignature) -> TransactionSignature:
        notary = self.stx.tx.notary
        data = signed_bytes(self.stx.id)
        if signature.by != notary or not self.services.identity.verify(
            notary, data, signature.signature
        ):
            raise TransactionVerificationException(
                f"the notary {notary}'s signature does not verify", self.stx.id
            )
        return signature


@initiated_by(Notarise)
class NotaryResponder(FlowLogic[None]):
    """Commit the transaction's inputs and sign it, or refuse with :class:`NotaryException`."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        stx = (await self.session.receive(SignedTransaction)).unwrap(self._check)
        commits = VaultTable(self, "notary_commits")
        refs = [str(ref) for ref in stx.tx.inputs]
        if refs:
            marks = ", ".join("?" for _ in refs)
            committed = await commits.rows_where(f"ref IN ({marks})", refs, order_by="ref")
            for row in committed:
                if row["tx_id"] != stx.id:
                    raise NotaryException(
                        f"input {row['ref']} was consumed by transaction {row['tx_id']}",
                        stx.id,
                        conflicting_tx=row["tx_id"],
                        ref=row["ref"],
                    )
            now = self.now().isoformat()
            fresh = sorted(set(refs) - {row["ref"] for row in committed})
            commits.insert_all(
                [
                    {"ref": ref, "tx_id": stx.id, "requested_by": self.session.counterparty}
                    | {"committed_at": now}
                    for ref in fresh
                ]
            )
        signature = self.services.identity.sign(signed_bytes(stx.id))
        # The commits above are written with the checkpoint of this send.
        await self.session.send(TransactionSignature(self.our_identity, signature))

    def _check(self, stx: SignedTransaction) -> SignedTransaction:
        me = self.our_identity
        if stx.tx.notary != me:
            raise NotaryException(f"{me} is not the notary of this transaction", stx.id)
        try:
            check_signatures(stx, self.services.identity.verify, allowed_missing={me})
        except TransactionVerificationException as exc:
            raise NotaryException(str(exc), stx.id) from exc
        window = stx.tx.time_window
        if window is not None and not window.contains(self.now()):
            raise NotaryException(f"{self.now().isoformat()} is outside the time window", stx.id)
        return stx


__all__ = ["Notarise", "NotaryException", "NotaryResponder"]
