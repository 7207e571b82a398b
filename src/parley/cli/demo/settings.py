"""What ``parley demo`` runs (nodes, app, flows, amounts), how long it waits, and its error."""

from __future__ import annotations

from typing import Final

NODES: Final = ("seller", "buyer", "notary")
APP: Final = "parley.apps.trade"
USER: Final = "demo"
#: The flows the demo starts over RPC.
FLOWS: Final = {
    "IssuePaper": f"{APP}.issue:IssuePaper",
    "IssueCash": f"{APP}.issue:IssueCash",
    "PlaceBid": f"{APP}.issue:PlaceBid",
    "Seller": f"{APP}.twoparty:Seller",
    "SpendAgain": f"{APP}.demo:SpendAgain",
}
FACE_VALUE, CASH, PRICE, CURRENCY = "1100", "1500", "1000", "USD"
#: Client ids of the demo's flows (a start that is retried finds the same flow).
TRADE_ID: Final = "demo-trade"
#: Seconds a node may take to start, a flow to finish, a node to stop after SIGTERM.
START_WAIT: Final = 30.0
FLOW_WAIT: Final = 30.0
STOP_GRACE: Final = 5.0
#: Seconds between two looks at something the demo waits for (with a deadline).
POLL: Final = 0.01


class DemoError(Exception):
    """Something the demo needs did not happen; the message says what (and where to look)."""
