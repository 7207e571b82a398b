"""The demo itself: the network map, the nodes over RPC, the issue, the trade (with --crash,
the buyer killed and started again), the vaults and the double spend the notary refuses.

It drives the children of :mod:`parley.cli.demo.processes` and says what happens through
:mod:`parley.cli.demo.output`.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parley.cli.demo.output import Output, Trees, why
from parley.cli.demo.processes import Children, tail
from parley.cli.demo.settings import (
    APP,
    CASH,
    CURRENCY,
    FACE_VALUE,
    FLOW_WAIT,
    FLOWS,
    NODES,
    POLL,
    PRICE,
    START_WAIT,
    TRADE_ID,
    USER,
    DemoError,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from parley.rpc.client import AsyncRpcClient
    from parley.rpc.models import FlowOutcome, ProgressUpdate


@dataclass
class _Ledger:
    """What the demo put on the ledger, and the trade."""

    paper_tx: str = ""
    cash_tx: str = ""
    trade_id: str = ""

    @property
    def paper_ref(self) -> str:
        return f"{self.paper_tx}:0"

    @property
    def cash_ref(self) -> str:
        return f"{self.cash_tx}:0"


class Demo:
    def __init__(
        self,
        directory: Path,
        children: Children,
        out: Output,
        crash: bool,
        rng: random.Random,
    ) -> None:
        self.directory, self.children, self.out = directory, children, out
        self.crash, self.rng = crash, rng
        import secrets  # noqa: PLC0415 (only when the demo runs)

        self.password = secrets.token_urlsafe(16)
        self.url = ""
        self.ledger = _Ledger()
        #: The buyer's step when --crash killed it.
        self.crashed: str | None = None

    def db(self, name: str) -> Path:
        return self.directory / name / "parley.sqlite"

    def run(self) -> None:
        self.url = self.children.start_nats()
        pid = self.children.server_pid
        self.out.step("nats-server", f"{self.url} with JetStream (pid {pid})")
        self._network()
        for name in NODES:
            self.children.start_node(name)
        import asyncio  # noqa: PLC0415 (asyncio: only when the demo runs)

        try:
            asyncio.run(self._over_rpc())
        except asyncio.CancelledError:  # by SIGTERM (see _over_rpc)
            raise KeyboardInterrupt from None

    def _network(self) -> None:
        """The operator's key, the nodes' keys, their admission, their parley.toml."""
        # Deferred: PyNaCl, NATS and scrypt are for the commands that use them.
        from parley.identity.keys import load_identity, new_operator_key  # noqa: PLC0415
        from parley.rpc.users import RpcUser, hash_password  # noqa: PLC0415
        from parley.transport.admin import NetworkAdmin  # noqa: PLC0415

        operator = new_operator_key()
        network = self.directory / "network"
        network.mkdir()
        (network / "operator.pub").write_text(operator.public_key + "\n")
        user = RpcUser(USER, hash_password(self.password), ["ALL"])
        admin = NetworkAdmin(self.url, operator)
        admitted = []
        for name in NODES:
            home = self.directory / name
            home.mkdir(mode=0o700)
            key = load_identity(home).public_key
            admin.admit(name, [key], apps=[APP])
            admitted.append(f"{name} {key[:8]}…")
            settings = {
                "name": name,
                "nats": self.url,
                "data_dir": str(home),
                "apps": [APP],
                "operator_key": str(network / "operator.pub"),
                "map_wait": 10,
            }
            lines = ["[node]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
            (home / "parley.toml").write_text("\n".join(lines) + "\n\n" + user.toml())
        self.out.step(
            "network map",
            f"operator key {operator.public_key[:8]}… made for the demo; admitted "
            f"{', '.join(admitted)}: every message is signed",
        )

    async def _over_rpc(self) -> None:
        import asyncio  # noqa: PLC0415 (only when the demo runs)

        from parley.rpc.client import AsyncRpcClient  # noqa: PLC0415 (nats-py, the codec)

        # SIGTERM, like Ctrl-C (which asyncio.run handles so), cancels the demo.
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, AsyncRpcClient] = {}
            for name in NODES:
                client = AsyncRpcClient(
                    self.url, name, user=USER, password=self.password, timeout=10.0
                )
                clients[name] = await stack.enter_async_context(client)
            began = time.monotonic()
            await asyncio.gather(*(self._ready(name, clients[name]) for name in NODES))
            pids = ", ".join(f"{n} (pid {self.children.nodes[n].pid})" for n in NODES)
            self.out.step("nodes", f"{pids} ready in {time.monotonic() - began:.1f} s")
            await self._issue(clients)
            await self._trade(clients)
            self._vaults()
            await self._double_spend(clients["buyer"])

    async def _ready(self, name: str, client: AsyncRpcClient) -> None:
        """Wait until the node's RPC service answers (it starts once the node is up)."""
        import asyncio  # noqa: PLC0415 (only when the demo runs)

        from parley.rpc.errors import NodeUnreachable, RpcTimeout  # noqa: PLC0415

        deadline = time.monotonic() + START_WAIT
        while True:
            proc = self.children.nodes[name]
            if proc.poll() is not None:
                log = self.directory / name / "node.log"
                raise DemoError(
                    f"node {name} exited with status {proc.returncode} while starting; the end "
                    f"of {log}:\n{tail(log)}"
                )
            with contextlib.suppress(NodeUnreachable, RpcTimeout):
                await client.call("stats", {}, timeout=2.0)
                return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"node {name} did not answer within {START_WAIT:.0f} s; see "
                    f"{self.directory / name / 'node.log'}"
                )
            await asyncio.sleep(POLL * 5)

    async def _run_flow(
        self, client: AsyncRpcClient, flow: str, args: Sequence[object], client_id: str
    ) -> Any:
        handle = await client.start_flow(FLOWS[flow], args, client_id=client_id)
        outcome = await handle.outcome(timeout=FLOW_WAIT)
        if not outcome.completed:
            raise DemoError(f"{flow} failed on {client.node}: {why(outcome)}")
        return outcome.value()

    async def _issue(self, clients: dict[str, AsyncRpcClient]) -> None:
        import asyncio  # noqa: PLC0415 (only when the demo runs)

        maturity = (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0).isoformat()
        paper, cash, _ = await asyncio.gather(
            self._run_flow(
                clients["seller"],
                "IssuePaper",
                [FACE_VALUE, CURRENCY, maturity, "notary"],
                "demo-paper",
            ),
            self._run_flow(clients["buyer"], "IssueCash", [CASH, CURRENCY, "notary"], "demo-cash"),
            self._run_flow(
                clients["buyer"],
                "PlaceBid",
                ["seller", "CommercialPaper", PRICE, CURRENCY],
                "demo-bid",
            ),
        )
        self.ledger.paper_tx, self.ledger.cash_tx = str(paper), str(cash)
        self.out.step(
            "issued", f"seller: a commercial paper worth {FACE_VALUE} {CURRENCY} (tx {paper[:12]})"
        )
        self.out.step(
            "",
            f"buyer: {CASH} {CURRENCY} of cash (tx {cash[:12]}), and a bid of {PRICE} {CURRENCY} "
            "for the seller's paper",
        )

    # ---- the trade ----------------------------------------------------------------------------
    async def _trade(self, clients: dict[str, AsyncRpcClient]) -> None:
        import asyncio  # noqa: PLC0415 (only when the demo runs)

        # Deferred: the engine's ids (docs/architecture.md: a responder's flow id is a hash of
        # the sender and the initiator's session, `<flow id>.<n>`).
        from parley.engine.handles import client_flow_id, responder_flow_id  # noqa: PLC0415
        from parley.protocol.state import session_id_for  # noqa: PLC0415

        seller_flow = client_flow_id(TRADE_ID)
        buyer_flow = responder_flow_id("seller", session_id_for(seller_flow, 0))
        what = f"the seller sells its paper to the buyer for {PRICE} {CURRENCY}"
        if self.crash:
            what += "; the buyer's process will be killed at a random step"
        self.out.step("trade", what)
        trees = self.out.trees()
        try:
            buyer = asyncio.create_task(self._follow_buyer(clients["buyer"], buyer_flow, trees))
            try:
                handle = await clients["seller"].start_flow(
                    FLOWS["Seller"],
                    ["buyer", self.ledger.paper_ref, PRICE, CURRENCY],
                    client_id=TRADE_ID,
                )
                outcome = await self._follow(clients["seller"], handle.flow_id, "seller", trees)
                if not outcome.completed:
                    raise DemoError(f"the trade failed: {why(outcome)}")
                self.ledger.trade_id = str(outcome.value())
                try:
                    await asyncio.wait_for(asyncio.shield(buyer), FLOW_WAIT)
                except TimeoutError:
                    raise DemoError(
                        f"the buyer's flow did not end within {FLOW_WAIT:.0f} s of the seller's"
                    ) from None
            finally:
                buyer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await buyer
        finally:
            trees.close()
        self.out.step("transaction", f"[bold]{self.ledger.trade_id}[/]")
        if self.crash:
            self._check_exactly_once()

    async def _follow(
        self, client: AsyncRpcClient, flow_id: str, side: str, trees: Trees
    ) -> FlowOutcome:
        outcome = None
        async for update in client.track(flow_id):  # to its end
            trees.update(side, update)
            outcome = update.outcome or outcome
        if outcome is None:
            raise DemoError(f"the {side}'s progress feed ended without the flow's outcome")
        return outcome

    async def _follow_buyer(self, client: AsyncRpcClient, flow_id: str, trees: Trees) -> None:
        """Follow the buyer's flow (a responder: it runs once the seller's offer arrived); with
        --crash, kill the buyer at a random step, start it again and follow the flow on."""
        seen = False
        target: tuple[str, ...] | None = None
        async with contextlib.aclosing(self._buyer_updates(client, flow_id)) as updates:
            async for update in updates:
                seen = True
                trees.update("buyer", update)
                if not self.crash:
                    continue
                states = _reached(update)
                target = target or self._crash_step(states)
                if target is not None and states.get(target) in ("current", "done"):
                    break
            else:
                if not seen:
                    trees.note("buyer", "[green]✓ finished before the demo could follow it[/]")
                elif self.crash:
                    trees.note("buyer", "[yellow]ended before the step chosen for the crash[/]")
                return
        self._crash(update, trees)
        await self._ready("buyer", client)
        seen = False
        async with contextlib.aclosing(self._buyer_updates(client, flow_id)) as updates:
            async for update in updates:
                seen = True
                trees.update("buyer", update)
        if not seen:
            trees.finish("buyer")
            trees.note("buyer", "[green]✓ went on after the restart and finished[/]")

    async def _buyer_updates(
        self, client: AsyncRpcClient, flow_id: str
    ) -> AsyncGenerator[ProgressUpdate, None]:
        """The progress of the buyer's flow, from when the buyer runs it (``track`` finds it)
        to its end; nothing if it ended unseen (the trade is done, and the buyer runs no flow)."""
        import asyncio  # noqa: PLC0415 (only when the demo runs)

        from parley.rpc.errors import (  # noqa: PLC0415
            FlowNotFound,
            NodeUnavailable,
            NodeUnreachable,
            RpcTimeout,
        )

        deadline = time.monotonic() + FLOW_WAIT
        while True:
            try:
                async for update in client.track(flow_id):
                    yield update
                return
            except FlowNotFound:  # not yet, or no more
                if self.ledger.trade_id and not await client.list_flows(status="RUNNABLE"):
                    return
            except (NodeUnreachable, NodeUnavailable, RpcTimeout):
                pass  # restarting
            if time.monotonic() > deadline:
                raise DemoError(f"the buyer did not run its side of the trade in {FLOW_WAIT:.0f} s")
            await asyncio.sleep(POLL)

    def _crash_step(self, states: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
        """A random step of the buyer's tree, from its current step on."""
        order = list(states)
        current = [p for p, s in states.items() if s == "current"]
        start = order.index(current[-1]) if current else 0
        candidates = [p for p in order[start:] if p[-1] != "Done"]
        return self.rng.choice(candidates) if candidates else None

    def _crash(self, update: ProgressUpdate, trees: Trees) -> None:
        from rich.markup import escape  # noqa: PLC0415 (rich)

        pid = self.children.kill("buyer")
        self.crashed = update.current or "its start"
        trees.note("buyer", f"[red]✗ killed (SIGKILL, pid {pid}) at: {escape(self.crashed)}[/]")
        proc = self.children.start_node("buyer")
        trees.note("buyer", f"[yellow]↻ started again (pid {proc.pid})[/]")

    # ---- the vaults ---------------------------------------------------------------------------
    def _vaults(self) -> None:
        for name in NODES:
            self.out.table(_vault_table(name, self.db(name), self.ledger.trade_id))

    def _check_exactly_once(self) -> None:
        trade = self.ledger.trade_id
        recorded = "SELECT count(*) FROM vault_transactions WHERE id = ?"
        counts = {name: _rows(self.db(name), recorded, trade) for name in ("seller", "buyer")}
        committed = "SELECT count(*) FROM notary_commits WHERE tx_id = ?"
        commits = _rows(self.db("notary"), committed, trade)
        if counts != {"seller": [(1,)], "buyer": [(1,)]} or commits != [(2,)]:
            raise DemoError(
                f"the trade is not recorded exactly once: {counts} in the vaults, {commits} "
                "commits at the notary"
            )
        self.out.step(
            "exactly once",
            "[green]✓[/] the trade is recorded once by the seller and once by the buyer, and "
            "the notary committed its two inputs once",
        )

    async def _double_spend(self, buyer: AsyncRpcClient) -> None:
        from rich.markup import escape  # noqa: PLC0415 (rich)

        ref = self.ledger.cash_ref
        self.out.step(
            "double spend",
            f"the buyer signs a transaction that spends its {CASH} {CURRENCY} of cash "
            f"({ref[:12]}…:0) again, and asks the notary",
        )
        handle = await buyer.start_flow(FLOWS["SpendAgain"], [ref], client_id="demo-spend-again")
        outcome = await handle.outcome(timeout=FLOW_WAIT)
        if outcome.completed:
            raise DemoError("the notary signed a double spend")
        if not (outcome.error_type or "").endswith("NotaryException"):
            raise DemoError(f"the double spend failed, but not at the notary: {why(outcome)}")
        message = escape(outcome.error_message or "")
        self.out.step("", f"[green]✓[/] refused by the notary: {message}")


def _rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of a node's database, read-only (the node may be running)."""
    import sqlite3  # noqa: PLC0415 (only when the demo runs)

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def _vault_table(name: str, db: Path, trade_id: str) -> RenderableType:
    from rich.table import Table  # noqa: PLC0415 (rich is slow to import)

    def short(tx: str | None) -> str:
        if not tx:
            return "—"
        return f"{tx[:12]} (the trade)" if tx == trade_id else tx[:12]

    if name == "notary":
        table = Table(title="the notary's commits", title_justify="left")
        for column in ("input", "consumed by", "requested by"):
            table.add_column(column, no_wrap=True)
        sql = "SELECT ref, tx_id, requested_by FROM notary_commits ORDER BY ref"
        for ref, tx, by in _rows(db, sql):
            table.add_row(f"{ref[:12]}:{ref.rpartition(':')[2]}", short(tx), by)
        return table
    table = Table(title=f"the {name}'s vault", title_justify="left")
    for column in ("state", "amount", "issuer", "created by", "spent by"):
        table.add_column(column, no_wrap=True)
    sql = (
        "SELECT s.kind, s.amount, s.currency, s.issuer, s.tx_id, c.consumed_by"
        " FROM vault_states s LEFT JOIN vault_consumed c ON c.ref = s.ref"
        " ORDER BY s.recorded_at, s.ref"
    )
    for kind, amount, currency, issuer, tx, spent in _rows(db, sql):
        style = "dim" if spent else ""
        table.add_row(kind, f"{amount} {currency}", issuer, short(tx), short(spent), style=style)
    return table


def _reached(update: ProgressUpdate) -> dict[tuple[str, ...], str]:
    """Each step's path of labels and its state (``done``, ``current``, ``pending``)."""
    from parley.cli.render import reached  # noqa: PLC0415 (rich)

    return {path: state for path, _, state in reached(update.tree)}
