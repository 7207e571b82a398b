"""What ``parley demo`` runs besides the trade: a double spend, for the notary to refuse.

Rules:

* ``SpendAgain`` is what a buggy or dishonest client of a node could do after a trade: build a
  transaction that spends again a state the node has already spent, sign it, and ask the notary.
  The notary refuses with :class:`~parley.apps.trade.notary.NotaryException`, naming the
  transaction that spent the state first; nothing is recorded.
* It only ever tries states this node has already spent (its vault says so): a state still
  unspent is refused before anything is built, so the flow can't move anything.
"""

from __future__ import annotations

from parley import FlowException, FlowLogic, startable_by_rpc
from parley.apps.trade.finality import Finality
from parley.apps.trade.states import (
    MOVE_COMMANDS,
    Command,
    SignedTransaction,
    StateRef,
    Transaction,
    TransactionSignature,
    kind_of,
    signed_bytes,
)
from parley.apps.trade.vault import Vault


@startable_by_rpc
class SpendAgain(FlowLogic[str]):
    """Spend again the state at ``ref`` (``"<tx id>:<index>"``), which this node already spent.

    The notary refuses (:class:`~parley.apps.trade.notary.NotaryException`, with the
    transaction that spent it as ``conflicting_tx``). Raises :class:`FlowException` if this node
    has not spent the state.
    """

    def __init__(self, ref: str) -> None:
        self.ref = StateRef.parse(ref)

    async def call(self) -> str:
        vault = Vault(self)
        spent = await vault.consumed.rows_where("ref = ?", [str(self.ref)], select="ref")
        if not spent:
            raise FlowException(f"{self.our_identity} has not spent {self.ref}: nothing to try")
        (parent,) = (await vault.load([self.ref.txhash])).values()
        state = parent.tx.outputs[self.ref.index]
        tx = Transaction(
            inputs=(self.ref,),
            outputs=(state,),
            commands=(Command(MOVE_COMMANDS[kind_of(state)], (self.our_identity,)),),
            notary=parent.tx.notary,
            time_window=None,
            salt=self.uuid(),
        )
        mine = self.services.identity.sign(signed_bytes(tx.id))
        stx = SignedTransaction(tx, (TransactionSignature(self.our_identity, mine),))
        return (await self.sub_flow(Finality(stx, [], (parent,)))).id


__all__ = ["SpendAgain"]
