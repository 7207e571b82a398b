"""``parley demo``: the two-party trade on three node processes, from nothing.

It starts the bundled nats-server, makes an operator key for the demo and admits ``seller``,
``buyer`` and ``notary`` to the network map under their own keys (so every message is signed and
checked), and runs each node as a ``parley node run`` process. Over RPC it issues a commercial
paper to the seller and cash to the buyer, places the buyer's bid, and runs the trade
(``parley.apps.trade``) while showing both sides' progress trees, fed by the RPC ``track`` feeds.
Then it prints each vault as a table and the transaction's id, and has the buyer spend its cash
again (``SpendAgain``), which the notary refuses. With ``--crash`` it kills the buyer's process
(SIGKILL) at a random step of the trade and starts it again: the buyer goes on from its last
checkpoint and the trade is recorded exactly once, which the demo checks in every vault.

Rules:

* Everything lives in one directory: a temporary one, deleted at the end, or ``--data-dir`` (new
  or empty, kept). ``nats/`` holds JetStream and the server's log, ``network/operator.pub`` the
  operator's public key, and each node's directory its ``parley.toml`` (with the demo's RPC
  user), its key, its database and its log (``node.log``).
* Every process the demo starts is its child and is stopped by its PID whatever happens (the end,
  an error, Ctrl-C, SIGTERM): the nodes first (SIGTERM, then SIGKILL after a grace period), then
  nats-server. The nodes run in sessions of their own, so a Ctrl-C at the terminal reaches the
  demo, which stops them.
* Progress: on a terminal, a live display of both trees side by side; elsewhere (a pipe, a test),
  one line per step as it is reached, child steps indented.
* Nothing waits by sleeping: nodes, flows and feeds are awaited with deadlines (a node's readiness
  and the buyer's flow are polled).
* Heavy imports (NATS, the node's code, rich) happen when the command runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from parley.cli.network import fail

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from parley.rpc.client import AsyncRpcClient
    from parley.rpc.models import FlowOutcome, ProgressUpdate

__all__ = ["demo"]

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


def demo(
    crash: Annotated[
        bool,
        typer.Option(
            "--crash",
            help="Kill the buyer's process (SIGKILL) at a random step of the trade, then start "
            "it again: the trade finishes exactly once.",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep everything in this directory (new or empty); default: a temporary "
            "directory, deleted at the end."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for --crash's random step (to run it again).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Run the two-party trade on three node processes, with nothing else running.

    Starts nats-server and the nodes seller, buyer and notary (admitted to a network map made
    for the demo), issues a commercial paper and cash, runs the trade with both sides' progress
    live, prints each vault and the transaction id, and shows the notary refusing a double
    spend. Everything it started is stopped at the end, also on Ctrl-C.
    """
    directory, temporary = _directory(data_dir)
    began = time.monotonic()
    out = _Output()
    children = _Children(directory)
    code = 0
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        out.title(directory, temporary)
        _Demo(directory, children, out, crash, random.Random(seed)).run()
    except KeyboardInterrupt:
        code = 130
        out.line("[yellow]interrupted[/]: stopping what the demo started")
    except DemoError as exc:
        code = 1
        out.error(str(exc))
    except Exception as exc:
        if debug:
            raise
        code = 1
        out.error(f"{type(exc).__name__}: {exc} (--debug shows the traceback)")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped, alive = children.stop_all()
        if alive:
            code = code or 1
            out.error(f"processes of the demo still run: {', '.join(map(str, alive))}")
        elif stopped:
            out.step("stopped", f"{', '.join(stopped)}: no process left")
        if temporary and code == 1:
            out.line(f"the logs are in {directory} (kept: delete it when done)")
        elif temporary:
            shutil.rmtree(directory, ignore_errors=True)
        out.line(f"[dim]the demo took {time.monotonic() - began:.1f} s[/]")
    raise typer.Exit(code)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _tail(log: Path, lines: int = 15) -> str:
    """The end of a log file."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _environment() -> dict[str, str]:
    """The children's environment: the caller's without ``PARLEY_*`` (a ``PARLEY_NATS_URL``
    would win over the nodes' configuration)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


def _directory(data_dir: Path | None) -> tuple[Path, bool]:
    """The demo's directory, and whether it is a temporary one."""
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="parley-demo-")).resolve(), True
    directory = data_dir.expanduser().resolve()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(
            f"--data-dir {data_dir} is not a new or empty directory: the demo starts from "
            "nothing (remove it, or give another one)",
            2,
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"can't create --data-dir {data_dir}: {exc.strerror}", 2)
    return directory, False


# ---------------------------------------------------------------------- the processes


class _Children:
    """The processes the demo started: nats-server and the nodes, stopped by PID."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: ``parley nats serve``, which runs nats-server.
        self.nats: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        #: nats-server's own PID (``parley nats serve`` runs it).
        self.server_pid: int | None = None
        #: Every process started (a restarted node is two).
        self.started: list[subprocess.Popen[bytes]] = []

    def start_nats(self) -> str:
        """``parley nats serve`` in a session of its own (a Ctrl-C at the terminal must not stop
        the server before the nodes); returns its URL, the first line it prints."""
        store = self.directory / "nats"
        store.mkdir()
        command = [sys.executable, "-m", "parley.cli", "nats", "serve", "--port", "0"]
        command += ["--store-dir", str(store)]
        with (store / "serve.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=self.directory,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.nats = proc
        self.started.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + START_WAIT
        url = ""
        while not url and proc.poll() is None and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], POLL * 10)[0]:
                url = proc.stdout.readline().decode().strip()
        if not url.startswith("nats://"):
            serve_log = store / "serve.log"
            raise DemoError(
                f"nats-server did not start; the end of {serve_log}:\n{_tail(serve_log)}"
            )
        for ports in (store / "ports").glob("nats-server_*.ports"):  # written by the server
            with contextlib.suppress(ValueError):
                self.server_pid = int(ports.stem.rpartition("_")[2])
        return url

    def start_node(self, name: str) -> subprocess.Popen[bytes]:
        """``parley node run --config <name>/parley.toml``, logging to ``<name>/node.log``."""
        home = self.directory / name
        command = [sys.executable, "-m", "parley.cli", "node", "run"]
        command += ["--config", str(home / "parley.toml")]
        with (home / "node.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=home,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes[name] = proc
        self.started.append(proc)
        return proc

    def kill(self, name: str) -> int:
        """SIGKILL the node's process (a crash); returns its PID."""
        proc = self.nodes[name]
        proc.kill()
        proc.wait()
        return proc.pid

    def stop_all(self) -> tuple[list[str], list[int]]:
        """Stop every process still running: the nodes (SIGTERM, then SIGKILL after
        :data:`STOP_GRACE`), then nats-server. Returns what was stopped, and the PIDs of the
        demo's processes still alive (none, unless something refused to die)."""
        stopped = []
        running = {n: p for n, p in self.nodes.items() if p.poll() is None}
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for name, proc in running.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stopped.append(f"{name} (pid {proc.pid})")
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGTERM)  # it stops its nats-server, then itself
            try:
                self.nats.wait(STOP_GRACE * 2)
            except subprocess.TimeoutExpired:  # the server with it: it is in their group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.nats.pid, signal.SIGKILL)
                self.nats.wait()
            stopped.append(f"nats-server (pid {self.server_pid or self.nats.pid})")
        if self.nats is not None and self.nats.stdout is not None:
            self.nats.stdout.close()
        server = self.server_pid
        if server is not None and _alive(server) and self._ours(server):
            os.kill(server, signal.SIGKILL)  # its `parley nats serve` died without stopping it
        pids = [proc.pid for proc in self.started if proc.poll() is None]
        if server is not None and _alive(server):
            pids.append(server)
        return stopped, pids

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` is still the nats-server of this demo (not a PID used again)."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.directory / "nats").encode() in command


# ---------------------------------------------------------------------- the demo


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


class _Demo:
    def __init__(
        self,
        directory: Path,
        children: _Children,
        out: _Output,
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
                    f"of {log}:\n{_tail(log)}"
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
            raise DemoError(f"{flow} failed on {client.node}: {_why(outcome)}")
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
                    raise DemoError(f"the trade failed: {_why(outcome)}")
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
        self, client: AsyncRpcClient, flow_id: str, side: str, trees: _Trees
    ) -> FlowOutcome:
        outcome = None
        async for update in client.track(flow_id):  # to its end
            trees.update(side, update)
            outcome = update.outcome or outcome
        if outcome is None:
            raise DemoError(f"the {side}'s progress feed ended without the flow's outcome")
        return outcome

    async def _follow_buyer(self, client: AsyncRpcClient, flow_id: str, trees: _Trees) -> None:
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

    def _crash(self, update: ProgressUpdate, trees: _Trees) -> None:
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
            raise DemoError(f"the double spend failed, but not at the notary: {_why(outcome)}")
        message = escape(outcome.error_message or "")
        self.out.step("", f"[green]✓[/] refused by the notary: {message}")


def _why(outcome: FlowOutcome) -> str:
    return f"{(outcome.error_type or '?').rpartition(':')[2]}: {outcome.error_message}"


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


# ---------------------------------------------------------------------- output


def _reached(update: ProgressUpdate) -> dict[tuple[str, ...], str]:
    """Each step's path of labels and its state (``done``, ``current``, ``pending``)."""
    from parley.cli.render import reached  # noqa: PLC0415 (rich)

    return {path: state for path, _, state in reached(update.tree)}


class _Output:
    """What the demo says: to stdout, with rich (a wide console when it is not a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415 (rich is slow to import)

        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=max(console.width, 200))
        self.console: Console = console

    def title(self, directory: Path, temporary: bool) -> None:
        self.line(
            "[bold]Parley demo[/]: a seller sells a commercial paper to a buyer for cash, and a "
            "notary stops double spends"
        )
        from rich.markup import escape  # noqa: PLC0415 (rich)

        kept = "deleted at the end" if temporary else "kept"
        self.step("data", f"{escape(str(directory))} ({kept})")

    def step(self, what: str, text: str) -> None:
        self.console.print(f"[bold cyan]{what:>12}[/]  {text}")

    def line(self, text: str) -> None:
        self.console.print(text)

    def error(self, text: str) -> None:
        from rich.console import Console  # noqa: PLC0415 (rich)
        from rich.markup import escape  # noqa: PLC0415

        Console(stderr=True, highlight=False).print(f"[red]error:[/] {escape(text)}")

    def table(self, table: RenderableType) -> None:
        self.console.print(table)

    def trees(self) -> _Trees:
        return _Trees(self.console)


class _Trees:
    """The seller's and the buyer's progress: live side by side on a terminal, else lines."""

    SIDES: Final = ("seller", "buyer")

    def __init__(self, console: Console) -> None:
        self.console = console
        self.updates: dict[str, ProgressUpdate | None] = dict.fromkeys(self.SIDES)
        self.notes: dict[str, list[str]] = {side: [] for side in self.SIDES}
        self.printed: set[tuple[str, tuple[str, ...]]] = set()
        self.finished: set[str] = set()
        self.live: Any = None
        if console.is_terminal:
            from rich.live import Live  # noqa: PLC0415 (only on a terminal)

            self.live = Live(self._render(), console=console, refresh_per_second=12)
            self.live.start()

    def update(self, side: str, update: ProgressUpdate) -> None:
        self.updates[side] = update
        if self.live is not None:
            self.live.update(self._render())
            return
        from rich.markup import escape  # noqa: PLC0415 (rich)

        from parley.cli.render import reached  # noqa: PLC0415

        # As in `parley flow`: a snapshot's steps before the current one count as passed.
        passed = ("done", "current") if update.kind == "snapshot" else ("current",)
        for path, row, state in reached(update.tree):
            if state not in passed or row.label == "Done" or (side, path) in self.printed:
                continue
            self.printed.add((side, path))
            label = escape(row.label)
            self.console.print(f"  [bold]{side:<6}[/] {'  ' * row.level}{label}")

    def note(self, side: str, text: str) -> None:
        self.notes[side].append(text)
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(f"  [bold]{side:<6}[/] {text}")

    def finish(self, side: str) -> None:
        """The flow ended unseen (it ran on while the demo could not follow): every step of
        its tree is passed."""
        self.finished.add(side)
        if self.live is not None:
            self.live.update(self._render())

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()

    def _render(self) -> RenderableType:
        from rich.table import Table  # noqa: PLC0415 (rich)

        grid = Table.grid(padding=(0, 6))
        for _ in self.SIDES:
            grid.add_column(vertical="top")
        grid.add_row(*(self._tree(side) for side in self.SIDES))
        return grid

    def _tree(self, side: str) -> RenderableType:
        from rich.markup import escape  # noqa: PLC0415 (rich)
        from rich.text import Text  # noqa: PLC0415
        from rich.tree import Tree  # noqa: PLC0415

        from parley.cli.render import reached  # noqa: PLC0415

        update = self.updates[side]
        flow = "Seller" if side == "seller" else "Buyer"
        root = Tree(Text(f"{side} · {flow}", style="bold"))
        if update is None:
            root.add("[dim]waiting for the flow…[/]")
        else:
            marks = {"done": "[green]✓[/]", "current": "[yellow]▶[/]", "pending": "[dim]·[/]"}
            branches: list[Tree] = [root]
            for _, row, reached_state in reached(update.tree):
                if row.label == "Done":
                    continue
                state = "done" if side in self.finished else reached_state
                del branches[row.level + 1 :]
                parent = branches[min(row.level, len(branches) - 1)]
                label = escape(row.label)
                text = f"[dim]{label}[/]" if state == "pending" else label
                branches.append(parent.add(f"{marks[state]} {text}"))
            if update.outcome is not None:
                done = update.outcome.completed
                root.add("[green]✓ done[/]" if done else f"[red]✗ {_why(update.outcome)}[/]")
        for note in self.notes[side]:
            root.add(note)
        return root
