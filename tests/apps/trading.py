"""A three-node trading network on MockNetwork, and readers of the nodes' vaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from parley import FlowLogic
from parley.apps.trade import (
    Command,
    IssueCash,
    IssuePaper,
    PlaceBid,
    Seller,
    SignedTransaction,
    StateRef,
    Transaction,
    TransactionSignature,
    Vault,
)
from parley.apps.trade.states import signed_bytes
from parley.testing import MockFlowHandle, MockNetwork, MockNode

APPS = ["parley.apps.trade"]
MATURITY = "2027-01-01T00:00:00+00:00"
CASH, FACE_VALUE, PRICE, BID = Decimal(1500), Decimal(1100), Decimal(1000), Decimal(1000)


@dataclass
class Market:
    """The seller (owns a paper), the buyer (owns cash, has a bid) and the notary."""

    net: MockNetwork
    seller: MockNode
    buyer: MockNode
    notary: MockNode
    paper_tx: str
    cash_tx: str

    @property
    def paper_ref(self) -> str:
        return f"{self.paper_tx}:0"

    def sell(self, price: Decimal = PRICE, asset_ref: str | None = None) -> MockFlowHandle[str]:
        return self.seller.start_flow(Seller("buyer", asset_ref or self.paper_ref, price, "USD"))


def market(net: MockNetwork, *, bid: Decimal = BID, asset: str = "CommercialPaper") -> Market:
    """Issue the paper and the cash and place the bid (each flow run to its end)."""
    seller, buyer, notary = (net.create_node(n, apps=APPS) for n in ("seller", "buyer", "notary"))
    paper_tx = seller.start_flow(IssuePaper(FACE_VALUE, "USD", MATURITY, "notary")).result()
    cash_tx = buyer.start_flow(IssueCash(CASH, "USD", "notary")).result()
    buyer.start_flow(PlaceBid("seller", asset, bid, "USD")).result()
    return Market(net, seller, buyer, notary, paper_tx, cash_tx)


def trade(net: MockNetwork) -> Callable[[], str]:
    """The scenario of the restart tests: a market, then the trade."""
    return market(net).sell().result


def unconsumed(node: MockNode) -> list[tuple[object, ...]]:
    """(kind, owner, issuer, amount, tx id) of the node's unconsumed states, sorted."""
    return sorted(
        node.store.query(
            "SELECT kind, owner, issuer, amount, tx_id FROM vault_states"
            " WHERE ref NOT IN (SELECT ref FROM vault_consumed)"
        )
    )


def consumed(node: MockNode) -> list[tuple[object, ...]]:
    """(ref, consuming tx id) of the node's consumed states, sorted."""
    return sorted(node.store.query("SELECT ref, consumed_by FROM vault_consumed"))


def transactions(node: MockNode) -> list[str]:
    return sorted(str(i) for (i,) in node.store.query("SELECT id FROM vault_transactions"))


def notary_commits(node: MockNode) -> list[tuple[object, ...]]:
    return sorted(node.store.query("SELECT ref, tx_id, requested_by FROM notary_commits"))


def cash_everywhere(net: MockNetwork) -> Decimal:
    """The unconsumed cash in every vault of the network."""
    return sum(
        (
            Decimal(str(amount))
            for node in net.nodes.values()
            for kind, _, _, amount, _ in unconsumed(node)
            if kind == "Cash"
        ),
        Decimal(0),
    )


async def spend_again(
    flow: FlowLogic[Any], ref: str
) -> tuple[SignedTransaction, SignedTransaction]:
    """Inside ``flow``: a transaction spending ``ref`` (a state its node has) once more, signed by
    the node, as a buggy or dishonest client could build it; and the transaction ``ref`` is in."""
    state = StateRef.parse(ref)
    (parent,) = (await Vault(flow).load([state.txhash])).values()
    tx = Transaction(
        inputs=(state,),
        outputs=(parent.tx.outputs[state.index],),
        commands=(Command("cash.move", (flow.our_identity,)),),
        notary="notary",
        time_window=None,
        salt=flow.uuid(),
    )
    mine = flow.services.identity.sign(signed_bytes(tx.id))
    return SignedTransaction(tx, (TransactionSignature(flow.our_identity, mine),)), parent
