"""The two-party trade: a seller sells an asset (commercial paper) to a buyer for cash.

The conversation, on one session:

1. The ``Seller`` sends :class:`SellerTradeInfo`: the asset, where it comes from (its history),
   the price and whom to pay.
2. The ``Buyer`` checks it against its bid (``PlaceBid``): the asset's kind
   (:class:`AssetMismatchException`) and the price (:class:`UnacceptablePriceException`), then
   the asset's history. It builds the transaction (its cash in, the asset to itself, the price to
   the seller, its change back), signs it, and asks the seller to sign (``CollectSignatures``).
3. The seller checks the proposal (``SignPayment``: it spends the asset on offer and nothing else
   of the seller's, and pays the price) and signs.
4. The buyer notarises it, records it and sends it to the seller (``Finality``); the seller
   records it (``ReceiveFinality``). Both return the transaction's id.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    serializable,
    startable_by_rpc,
)
from parley.apps.trade.contracts import TransactionVerificationException, verify_chain
from parley.apps.trade.finality import Finality, ReceiveFinality
from parley.apps.trade.issue import as_amount
from parley.apps.trade.signing import CollectSignatures, SignTransaction
from parley.apps.trade.states import (
    MOVE_COMMANDS,
    Cash,
    Command,
    SignedTransaction,
    State,
    StateAndRef,
    StateRef,
    TimeWindow,
    Transaction,
    TransactionSignature,
    kind_of,
    signed_bytes,
    with_owner,
)
from parley.apps.trade.vault import Vault, VaultTable, total

#: How long the notary may take to sign a trade once the buyer has built it.
TRADE_WINDOW = timedelta(minutes=10)


#: The command that moves each kind of asset.
class UnacceptablePriceException(FlowException):
    """The seller asks more than the buyer bid (or in another currency)."""

    given_price: Decimal

    def __init__(self, message: str, given_price: Decimal) -> None:
        super().__init__(message)
        self.given_price = given_price


class AssetMismatchException(FlowException):
    """The seller offers another kind of asset than the buyer bid for."""

    expected_type: str
    type_name: str

    def __init__(self, message: str, expected_type: str, type_name: str) -> None:
        super().__init__(message)
        self.expected_type, self.type_name = expected_type, type_name


class InsufficientBalanceException(FlowException):
    """The buyer's unconsumed cash does not cover the price."""

    missing: Decimal

    def __init__(self, message: str, missing: Decimal) -> None:
        super().__init__(message)
        self.missing = missing


@serializable(name="parley.trade.SellerTradeInfo")
@dataclass(frozen=True)
class SellerTradeInfo:
    """The seller's offer: the asset, its history, the price, and whom to pay."""

    asset: StateAndRef
    price: Decimal
    currency: str
    pay_to: str
    history: tuple[SignedTransaction, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.asset, StateAndRef):
            raise ValueError("the asset is a StateAndRef")
        as_amount(self.price)
        if not all(isinstance(h, SignedTransaction) for h in self.history):
            raise ValueError("a history is a tuple of SignedTransaction")


@initiating_flow(version=1)
@startable_by_rpc
class Seller(FlowLogic[str]):
    """Sell the asset at ``asset_ref`` (``"<tx id>:<index>"``) to ``buyer`` for ``price``.

    Returns the id of the trade's transaction.
    """

    AWAITING_PROPOSAL = Step("Awaiting transaction proposal")
    VERIFYING_AND_SIGNING = Step("Verifying and signing transaction proposal")
    progress_tracker = ProgressTracker(AWAITING_PROPOSAL, VERIFYING_AND_SIGNING)

    def __init__(
        self, buyer: str, asset_ref: str, price: Decimal | str | int, currency: str
    ) -> None:
        self.buyer, self.asset_ref, self.currency = buyer, asset_ref, currency
        self.price = as_amount(price)

    async def call(self) -> str:
        self.progress_tracker.current_step = self.AWAITING_PROPOSAL
        vault = Vault(self)
        asset = await vault.unconsumed_state(StateRef.parse(self.asset_ref))
        if asset is None:
            raise FlowException(f"{self.our_identity} has no unconsumed state {self.asset_ref}")
        history = tuple(await vault.history([asset.ref]))
        session = self.initiate_flow(self.buyer)
        info = SellerTradeInfo(asset, self.price, self.currency, self.our_identity, history)
        await session.send(info)
        self.progress_tracker.current_step = self.VERIFYING_AND_SIGNING
        signer = SignPayment(session, asset, self.price, self.currency)
        signed = await self.sub_flow(signer)
        verified = tuple(signer.history.values())
        final = await self.sub_flow(ReceiveFinality(session, signed.id, verified))
        return final.id


class SignPayment(SignTransaction):
    """The seller's conditions: the proposal spends the asset on offer, nothing else of ours,
    gives the asset to the buyer and pays us the price."""

    def __init__(
        self, session: FlowSession, asset: StateAndRef, price: Decimal, currency: str
    ) -> None:
        super().__init__(session)
        self.asset, self.price, self.currency = asset, price, currency

    async def check(self, stx: SignedTransaction) -> None:
        tx, me, buyer = stx.tx, self.our_identity, self.session.counterparty

        def refuse(why: str) -> TransactionVerificationException:
            return TransactionVerificationException(f"{me} won't sign: {why}", stx.id)

        if self.asset.ref not in tx.inputs:
            raise refuse("it does not spend the asset on offer")
        spent = [self.history[r.txhash].tx.outputs[r.index] for r in tx.inputs]
        if [s for s in spent if s.owner == me] != [self.asset.state]:
            raise refuse("it spends other states of ours")
        if with_owner(self.asset.state, buyer) not in tx.outputs:
            raise refuse(f"it does not give the asset to {buyer}")
        paid = total(s for s in tx.outputs if s.owner == me and s.currency == self.currency)
        if paid < self.price:
            raise refuse(f"it pays {paid} {self.currency}, not {self.price}")


@initiated_by(Seller)
class Buyer(FlowLogic[str]):
    """Buy what the seller offers if it fits this node's bid; returns the trade's id."""

    RECEIVING = Step("Waiting for seller trading info")
    VERIFYING = Step("Verifying seller assets")
    SIGNING = Step("Generating and signing transaction proposal")
    COLLECTING_SIGNATURES = Step("Collecting signatures from other parties")
    RECORDING = Step("Recording completed transaction")
    progress_tracker = ProgressTracker(
        RECEIVING, VERIFYING, SIGNING, COLLECTING_SIGNATURES, RECORDING
    )

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> str:
        self.progress_tracker.current_step = self.RECEIVING
        info = (await self.session.receive(SellerTradeInfo)).unwrap_unchecked()  # checked below
        seller = self.session.counterparty
        await self.check_bid(seller, info)
        self.progress_tracker.current_step = self.VERIFYING
        history = self.check_asset(seller, info)
        self.progress_tracker.current_step = self.SIGNING
        vault = Vault(self)
        cash = await self.select_cash(vault, info.price, info.currency)
        history = (*history, *await vault.history([c.ref for c in cash]))
        stx = self.sign(self.proposal(info, cash))
        self.progress_tracker.current_step = self.COLLECTING_SIGNATURES
        stx = await self.sub_flow(CollectSignatures(stx, [self.session], history))
        self.progress_tracker.current_step = self.RECORDING
        kind = kind_of(info.asset.state)
        VaultTable(self, "trade_bids").delete_where("seller = ? AND asset = ?", [seller, kind])
        final = await self.sub_flow(Finality(stx, [self.session], history))
        return final.id

    async def check_bid(self, seller: str, info: SellerTradeInfo) -> None:
        """Raise if the offer does not fit our bid with ``seller``."""
        kind = kind_of(info.asset.state)
        bids = await VaultTable(self, "trade_bids").rows_where("seller = ?", [seller])
        bid = next((b for b in bids if b["asset"] == kind), None)
        if bid is None:
            expected = ", ".join(sorted(b["asset"] for b in bids)) or "nothing"
            raise AssetMismatchException(
                f"{self.our_identity} bids for {expected} from {seller}, not {kind}",
                expected_type=expected,
                type_name=kind,
            )
        limit = Decimal(bid["max_price"])
        if info.currency != bid["currency"] or info.price > limit:
            raise UnacceptablePriceException(
                f"{info.price} {info.currency} is more than the bid of {limit} {bid['currency']}",
                given_price=info.price,
            )

    def check_asset(self, seller: str, info: SellerTradeInfo) -> tuple[SignedTransaction, ...]:
        """The asset's verified history; raise if the seller does not own it or it is forged."""
        asset, known = info.asset, {h.id: h for h in info.history}
        parent = known.get(asset.ref.txhash)
        if parent is None or asset.ref.index >= len(parent.tx.outputs):
            raise TransactionVerificationException("the asset's history is missing", "")
        if parent.tx.outputs[asset.ref.index] != asset.state or asset.state.owner != seller:
            raise TransactionVerificationException(f"{seller} does not own the asset", parent.id)
        verified = verify_chain(parent, info.history, self.services.identity.verify)
        return (*verified.values(), parent)

    async def select_cash(self, vault: Vault, price: Decimal, currency: str) -> list[StateAndRef]:
        """Our oldest unconsumed cash in ``currency`` that covers ``price``."""
        chosen: list[StateAndRef] = []
        for item in await vault.unconsumed("Cash", currency):
            if total(c.state for c in chosen) >= price:
                break
            chosen.append(item)
        have = total(c.state for c in chosen)
        if have < price:
            raise InsufficientBalanceException(
                f"{self.our_identity} has {have} {currency}, not {price}", missing=price - have
            )
        return chosen

    def proposal(self, info: SellerTradeInfo, cash: list[StateAndRef]) -> Transaction:
        """Our cash and the asset in; the asset to us, the price to the seller, change to us."""
        me, asset = self.our_identity, info.asset
        paid: dict[str, Decimal] = defaultdict(Decimal)
        change: dict[str, Decimal] = defaultdict(Decimal)
        owed = info.price
        for item in cash:
            assert isinstance(item.state, Cash)
            part = min(item.state.amount, owed)
            owed -= part
            paid[item.state.issuer] += part
            change[item.state.issuer] += item.state.amount - part
        outputs: list[State] = [with_owner(asset.state, me)]
        outputs += [Cash(v, info.currency, info.pay_to, i) for i, v in paid.items() if v > 0]
        outputs += [Cash(v, info.currency, me, i) for i, v in change.items() if v > 0]
        move = MOVE_COMMANDS[kind_of(asset.state)]
        return Transaction(
            inputs=(*(c.ref for c in cash), asset.ref),
            outputs=tuple(outputs),
            commands=(Command("cash.move", (me,)), Command(move, (asset.state.owner,))),
            notary=self._notary_of(info),
            time_window=TimeWindow(None, self.now() + TRADE_WINDOW),
            salt=self.uuid(),
        )

    def sign(self, tx: Transaction) -> SignedTransaction:
        """``tx`` with our signature."""
        mine = self.services.identity.sign(signed_bytes(tx.id))
        return SignedTransaction(tx, (TransactionSignature(self.our_identity, mine),))

    @staticmethod
    def _notary_of(info: SellerTradeInfo) -> str:
        (parent,) = [h for h in info.history if h.id == info.asset.ref.txhash]
        return parent.tx.notary


__all__ = [
    "AssetMismatchException",
    "Buyer",
    "InsufficientBalanceException",
    "Seller",
    "SellerTradeInfo",
    "SignPayment",
    "UnacceptablePriceException",
]
