"""Putting value on the ledger, and standing instructions: ``IssueCash``, ``IssuePaper``,
``PlaceBid``.

Rules:

* An issue creates states out of nothing, owned by this node and issued by it; it is signed by
  the issuer only and names the notary that will have to sign when the states move. It consumes
  nothing and has no time window, so it is not notarised: ``Finality`` records it, and the
  records commit when the flow ends.
* Amounts are ``Decimal`` (or text, or an int, for clients that speak JSON); a maturity is an
  aware ``datetime`` (or ISO 8601 text).
* A bid is what the buyer's side of a trade answers with (a responder takes nothing but its
  session): the most it pays for one asset of a kind from one seller. Placing it again replaces
  it; a trade that fills it removes it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from parley import FlowLogic, startable_by_rpc
from parley.apps.trade.finality import Finality
from parley.apps.trade.states import (
    Cash,
    Command,
    CommercialPaper,
    SignedTransaction,
    State,
    Transaction,
    TransactionSignature,
    signed_bytes,
)
from parley.apps.trade.vault import VaultTable

#: What a bid can be for. Not cash: the buyer pays in cash, and a transaction moving cash for
#: cash would carry ``cash.move`` twice, which the contract refuses.
ASSET_KINDS = ("CommercialPaper",)


def as_amount(value: Decimal | str | int) -> Decimal:
    """An amount from a Decimal, its text or an int (not a float: it would not be exact)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise TypeError(f"an amount is a Decimal, a string or an int, not {value!r}")
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"an amount must be positive, not {value!r}")
    return amount


def as_moment(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.utcoffset() is None:
        raise ValueError(f"a moment needs a timezone: {value!r}")
    return moment


class _Issue(FlowLogic[str]):
    """Issue states to ourselves under ``command``; returns the transaction's id."""

    notary: str

    def outputs(self) -> tuple[State, ...]:
        raise NotImplementedError

    COMMAND = ""

    async def call(self) -> str:
        me = self.our_identity
        tx = Transaction(
            inputs=(),
            outputs=self.outputs(),
            commands=(Command(self.COMMAND, (me,)),),
            notary=self.notary,
            time_window=None,
            salt=self.uuid(),
        )
        signature = TransactionSignature(me, self.services.identity.sign(signed_bytes(tx.id)))
        stx = await self.sub_flow(Finality(SignedTransaction(tx, (signature,)), []))
        return stx.id


@startable_by_rpc
class IssueCash(_Issue):
    """Issue ``amount`` of ``currency`` to ourselves, to be moved under ``notary``."""

    COMMAND = "cash.issue"

    def __init__(self, amount: Decimal | str | int, currency: str, notary: str) -> None:
        self.amount, self.currency, self.notary = as_amount(amount), currency, notary

    def outputs(self) -> tuple[State, ...]:
        me = self.our_identity
        return (Cash(self.amount, self.currency, me, me),)


@startable_by_rpc
class IssuePaper(_Issue):
    """Issue a commercial paper worth ``face_value`` at ``maturity`` to ourselves.

    Returns the id of the issue; the paper is its output 0 (``f"{tx_id}:0"``).
    """

    COMMAND = "paper.issue"

    def __init__(
        self,
        face_value: Decimal | str | int,
        currency: str,
        maturity: datetime | str,
        notary: str,
    ) -> None:
        self.face_value, self.currency = as_amount(face_value), currency
        self.maturity, self.notary = as_moment(maturity), notary

    def outputs(self) -> tuple[State, ...]:
        me = self.our_identity
        return (CommercialPaper(self.face_value, self.currency, self.maturity, me, me),)


@startable_by_rpc
class PlaceBid(FlowLogic[None]):
    """Stand ready to buy one asset of kind ``asset`` from ``seller`` for at most ``max_price``."""

    def __init__(
        self, seller: str, asset: str, max_price: Decimal | str | int, currency: str
    ) -> None:
        if asset not in ASSET_KINDS:
            raise ValueError(f"an asset is one of {ASSET_KINDS}, not {asset!r}")
        self.seller, self.asset, self.currency = seller, asset, currency
        self.max_price = as_amount(max_price)

    async def call(self) -> None:
        row = {
            "seller": self.seller,
            "asset": self.asset,
            "currency": self.currency,
            "max_price": str(self.max_price),
            "placed_at": self.now().isoformat(),
        }
        VaultTable(self, "trade_bids").upsert(row, pk=("seller", "asset"))


__all__ = ["ASSET_KINDS", "IssueCash", "IssuePaper", "PlaceBid", "as_amount", "as_moment"]
