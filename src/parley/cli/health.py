"""``parley node health``: does the node whose data dir this is run, and is it healthy?

A running node writes ``<data-dir>/health.json`` every ``health_interval`` seconds (5 by default)
from a thread that first asks the node's own parts to answer: the flow workers and the
FlowManager (through their mailboxes), the Persistence actor, and NATS (a ping the server
answers). This command reads that record and exits 0 only if it is fresh, written by a process
that still runs, and names no problem; otherwise it says why on one line and exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from parley.cli.network import fail

#: How often the command reads the record again while it waits (``--timeout``).
POLL = 0.2


@dataclass(frozen=True)
class Verdict:
    """What the record in a data dir says: healthy or not, and in words why."""

    healthy: bool
    reason: str


def node_health(
    data_dir: Annotated[
        Path | None, typer.Option(help="The node's data directory (where health.json is).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="The node's parley.toml: its data_dir (or ./<name>) is the directory."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds to wait for the node to be healthy (default 0: answer at once)."
        ),
    ] = 0.0,
) -> None:
    """Exit 0 if the node runs and answers its heartbeat; otherwise say why and exit 1."""
    # Imported here: parley.cli.main imports this module to register its commands.
    from parley.cli.main import node_directory  # noqa: PLC0415

    directory = node_directory(data_dir, config)
    deadline = time.monotonic() + timeout
    while True:
        verdict = check(directory)
        if verdict.healthy:
            typer.echo(verdict.reason)
            return
        if time.monotonic() >= deadline:
            fail(verdict.reason, 1)
        time.sleep(POLL)  # the node rewrites the file on its own schedule: read it again


def check(data_dir: Path, now: float | None = None) -> Verdict:
    """Read ``data_dir``'s heartbeat and judge it (``now``: the wall clock, for tests)."""
    # Imported here: the node module pulls in pykka and NATS; only the file's name is needed.
    from parley.node import HEALTH_FILE  # noqa: PLC0415

    path = data_dir / HEALTH_FILE
    try:
        record: Any = json.loads(path.read_text())
        name, state, pid = str(record["node"]), str(record["state"]), int(record["pid"])
        written, stale_after = float(record["time"]), float(record["stale_after"])
        problems = [str(p) for p in record["problems"]]
    except FileNotFoundError:
        if not data_dir.is_dir():
            return Verdict(False, f"no such directory: {data_dir}")
        return Verdict(False, f"no heartbeat in {path}: no node has run with this data dir yet")
    except OSError as exc:
        return Verdict(False, f"can't read {path}: {exc.strerror}")
    except (ValueError, KeyError, TypeError) as exc:
        return Verdict(False, f"{path} is not a node's heartbeat ({exc!r})")
    age = (time.time() if now is None else now) - written
    same_host = record.get("host") == socket.gethostname()
    if state == "stopped":
        return Verdict(False, f"node {name} stopped at {_clock(written)}")
    if same_host and not _alive(pid):
        return Verdict(
            False,
            f"node {name} is not running: its process {pid} is gone "
            f"(last heartbeat {age:.0f} s ago, at {_clock(written)})",
        )
    if state == "starting":
        return Verdict(False, f"node {name} is starting (for {age:.0f} s; pid {pid})")
    if age > stale_after:
        return Verdict(
            False,
            f"node {name} is stuck or gone: its last heartbeat is {age:.0f} s old "
            f"(at {_clock(written)}; one is due every {float(record['interval']):g} s)",
        )
    if problems or state != "running":
        return Verdict(False, f"node {name} is unhealthy: {'; '.join(problems) or state}")
    return Verdict(True, f"node {name} is healthy (pid {pid}, heartbeat {age:.1f} s ago)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
