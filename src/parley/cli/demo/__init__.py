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

The command is here; the rest of the package follows the demo's parts:
:mod:`~parley.cli.demo.settings` (what it runs, how long it waits, its error),
:mod:`~parley.cli.demo.processes` (the children it starts and stops),
:mod:`~parley.cli.demo.run` (the network, the trade, the vaults, the double spend) and
:mod:`~parley.cli.demo.output` (what it prints).
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from parley.cli.demo.output import Output
from parley.cli.demo.processes import Children
from parley.cli.demo.run import Demo
from parley.cli.demo.settings import DemoError
from parley.cli.network import fail

__all__ = ["demo"]


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
    out = Output()
    children = Children(directory)
    code = 0
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        out.title(directory, temporary)
        Demo(directory, children, out, crash, random.Random(seed)).run()
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
