"""``parley flow``: start, follow, list, kill and signal flows on a running node, over its RPC.

Rules:

* Every command talks to one node's RPC service through NATS (``docs/rpc.md``): ``--nats``
  (``PARLEY_NATS_URL``), ``--user`` (``PARLEY_USER``) and ``--password`` (``PARLEY_PASSWORD``;
  asked for on a terminal when a user is given without one). ``flow start`` names the node as its
  first argument, the other commands take ``--node`` (``PARLEY_NODE``).
* ``flow start`` passes its arguments as text; the node converts them with the flow
  constructor's annotations (``int``, ``Decimal``, ``bool``, ``datetime``, JSON for lists and
  ``@serializable`` dataclasses) and refuses one that does not fit, naming the parameter and its
  type. Use ``--`` before an argument that starts with ``-``.
* Errors are one line on stderr, saying what to do: exit code 2 for what the request got wrong
  (an unknown flow class, with the closest names; an argument that does not fit; a signal of the
  wrong type), 1 for the situation (the node not reachable, with the URL; a permission refused,
  naming it; a timeout; a flow that failed). ``--debug`` shows the traceback instead.
* ``--json`` prints JSON on stdout (see :mod:`parley.cli.render`).
* Heavy imports (NATS, the codec, rich) happen inside the commands, so ``parley --help`` stays
  fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from parley.cli.network import DEFAULT_NATS, check_name, fail, hint
from parley.cli.options import grouped

if TYPE_CHECKING:
    from parley.rpc.models import FlowOutcome
    from parley.rpc.sync import RpcClient

flow_app = typer.Typer(
    help="Start, follow, list, kill and signal flows on a running node (over its RPC service).",
    no_args_is_help=True,
)

STATUSES = ("RUNNABLE", "HOSPITALIZED", "COMPLETED", "FAILED", "KILLED")
SIGNAL_TYPES = ("auto", "str", "int", "float", "decimal", "bool", "datetime", "date", "json")


def _statuses(incomplete: str) -> list[str]:
    return [s for s in STATUSES if s.startswith(incomplete.upper())]


NatsOption = Annotated[
    str,
    typer.Option("--nats", envvar="PARLEY_NATS_URL", help="The NATS server(s) the node uses."),
]
UserOption = Annotated[
    str | None,
    typer.Option(
        "--user", envvar="PARLEY_USER", help="RPC user (a \\[\\[users]] entry of the node config)."
    ),
]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="PARLEY_PASSWORD",
        help="The user's password (asked for on a terminal when missing).",
    ),
]
NodeOption = Annotated[
    str, typer.Option("--node", "-n", envvar="PARLEY_NODE", help="The node to ask.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]


@dataclass(frozen=True)
class Rpc:
    """How a command reaches a node's RPC service (the options every RPC command takes)."""

    nats: str
    user: str | None
    password: str | None
    timeout: float
    debug: bool


def _rpc_options(
    nats: NatsOption = DEFAULT_NATS,
    user: UserOption = None,
    password: PasswordOption = None,
    timeout: TimeoutOption = 10.0,
    debug: DebugOption = False,
) -> Rpc:
    return Rpc(nats, user, password, timeout, debug)


#: Gives a command (with a ``node`` and an ``rpc: Rpc`` parameter) the RPC connection options.
rpc_command = grouped("rpc", _rpc_options)


@contextmanager
def connected(node: str, rpc: Rpc) -> Iterator[RpcClient]:
    """A client of the node; its errors become one-line messages and exit codes."""
    from parley.rpc.errors import RpcError  # noqa: PLC0415 (nats-py, the codec)
    from parley.rpc.sync import RpcClient  # noqa: PLC0415

    check_name(node)
    password = rpc.password
    if rpc.user and password is None and sys.stdin.isatty():
        password = typer.prompt(f"password of {rpc.user}", hide_input=True)
    try:
        with RpcClient(
            rpc.nats, node, user=rpc.user, password=password, timeout=rpc.timeout
        ) as client:
            yield client
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except RpcError as exc:
        if rpc.debug:
            raise
        fail(exc.message, 2 if exc.bad_input else 1)
    except Exception as exc:
        if rpc.debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (--debug shows the traceback)")


# ---------------------------------------------------------------------- commands


@flow_app.command("start")
@rpc_command
def flow_start(
    node: Annotated[str, typer.Argument(help="The node that runs the flow.")],
    flow: Annotated[
        str, typer.Argument(help="The flow class: module:Class, or Class when unique there.")
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Constructor arguments (JSON for lists and dataclasses)."),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(help="The same id gives the same flow and result (retries, restarts)."),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option("--watch/--no-watch", help="Follow its progress, then print its result."),
    ] = True,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """Start FLOW on NODE with ARGS; with --watch, show its progress and its result."""
    with connected(node, rpc) as client:
        handle = client.start_flow(flow, list(args or []), client_id=client_id, text=True)
        started = {"flow_id": handle.flow_id, "flow": handle.flow, "client_id": client_id}
        if not watch:
            if as_json:
                dump_json(started)
            else:
                typer.echo(handle.flow_id)
                hint(
                    f"started {handle.flow} as {handle.flow_id} on {node}; follow it with "
                    f"`parley flow watch {handle.flow_id} --node {node}`"
                )
            return
        code = _follow(client, handle.flow_id, f"{handle.flow} {handle.flow_id}", as_json, started)
    raise typer.Exit(code)


@flow_app.command("watch")
@rpc_command
def flow_watch(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    node: NodeOption,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """Show a flow's progress until it ends, then its result."""
    with connected(node, rpc) as client:
        code = _follow(client, flow_id, f"flow {flow_id}", as_json, {"flow_id": flow_id})
    raise typer.Exit(code)


@flow_app.command("result")
@rpc_command
def flow_result(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    node: NodeOption,
    wait: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds to wait for the end (default: as long as it takes)."),
    ] = None,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """Print a flow's result once it ends (exit code 1 if it failed or was killed)."""
    with connected(node, rpc) as client:
        outcome = client.outcome(flow_id, wait)
    raise typer.Exit(_print_outcome(outcome, as_json, {"flow_id": flow_id}))


@flow_app.command("list")
@rpc_command
def flow_list(
    node: NodeOption,
    status: Annotated[
        str | None,
        typer.Option(help="Only flows with this status.", autocompletion=_statuses),
    ] = None,
    flow_class: Annotated[
        str | None, typer.Option("--class", help="Only flows of this class (or class name).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show every change (Ctrl-C ends).")
    ] = False,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """List the node's flows: id, class, status, step, what it waits for, since when."""
    if status is not None and status.upper() not in STATUSES:
        fail(f"--status {status!r} is not a status: use one of {', '.join(STATUSES)}", 2)
    from parley.cli.render import flow_table  # noqa: PLC0415 (rich is slow to import)

    title = f"Flows on {node}" + (f" ({status.upper()})" if status else "")
    with connected(node, rpc) as client:
        if not watch:
            rows = client.list_flows(status, flow_class)
            if as_json:
                dump_json([row.as_dict() for row in rows])
            elif rows:
                _console().print(flow_table(rows, title))
            else:
                hint(f"no flows on {node}" + (f" with status {status.upper()}" if status else ""))
            return
        _watch_list(client, status, flow_class, title, as_json)


def _watch_list(
    client: RpcClient, status: str | None, flow_class: str | None, title: str, as_json: bool
) -> None:
    from parley.cli.render import flow_table  # noqa: PLC0415 (rich is slow to import)

    updates = client.watch_flows(status, flow_class)
    if as_json:
        for rows in updates:
            typer.echo(json.dumps([row.as_dict() for row in rows]))
        return
    console = _console()
    if not console.is_terminal:
        for rows in updates:
            console.print(flow_table(rows, title))
        return
    from rich.live import Live  # noqa: PLC0415 (only on a terminal)

    with Live(console=console, refresh_per_second=4) as live:
        for rows in updates:
            live.update(flow_table(rows, title))


@flow_app.command("kill")
@rpc_command
def flow_kill(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    node: NodeOption,
    *,
    rpc: Rpc,
) -> None:
    """Kill a flow: it ends with KilledFlowException and its counterparties are told."""
    with connected(node, rpc) as client:
        client.kill_flow(flow_id)
    typer.echo(f"killed flow {flow_id} on {node}")


@flow_app.command("signal")
@rpc_command
def flow_signal(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    name: Annotated[str, typer.Argument(help="The signal's name (what the flow waits for).")],
    value: Annotated[str, typer.Argument(help="Its value (JSON when it parses, else text).")],
    node: NodeOption,
    as_type: Annotated[
        str,
        typer.Option(
            "--type",
            help=f"How to read VALUE: {', '.join(SIGNAL_TYPES)}.",
            autocompletion=lambda: list(SIGNAL_TYPES),
        ),
    ] = "auto",
    *,
    rpc: Rpc,
) -> None:
    """Send a flow waiting for a person the signal NAME with VALUE."""
    payload = _signal_value(value, as_type)
    with connected(node, rpc) as client:
        client.signal(flow_id, name, payload)
    typer.echo(f"signal {name} sent to flow {flow_id} on {node}")


def _signal_value(value: str, as_type: str) -> object:
    """VALUE read as ``--type`` says (``auto``: JSON when it parses as JSON, else the text)."""
    from datetime import date, datetime  # noqa: PLC0415 (only this command reads types)
    from decimal import Decimal  # noqa: PLC0415

    from parley.rpc.convert import parse_text  # noqa: PLC0415 (the flow API)

    if as_type == "auto":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if as_type == "json":
        try:
            return json.loads(value)
        except ValueError as exc:
            fail(f"VALUE is not JSON: {exc}", 2)
    types: dict[str, Any] = {
        "str": str,
        "int": int,
        "float": float,
        "decimal": Decimal,
        "bool": bool,
        "datetime": datetime,
        "date": date,
    }
    if as_type not in types:
        fail(f"--type {as_type!r} is not one of {', '.join(SIGNAL_TYPES)}", 2)
    try:
        return parse_text(value, types[as_type])
    except ValueError as exc:
        fail(f"VALUE {exc}", 2)


# ---------------------------------------------------------------------- following a flow


def _follow(
    client: RpcClient, flow_id: str, title: str, as_json: bool, facts: dict[str, Any]
) -> int:
    """Show the flow's progress until it ends, then its outcome; returns the exit code."""
    from parley.cli.render import LineProgress, LiveProgress, steps_json  # noqa: PLC0415 (rich)

    live = not as_json and sys.stderr.isatty()
    progress = LiveProgress(title) if live else LineProgress(quiet=as_json)
    if not live and not as_json:
        hint(title)
    outcome = None
    try:
        for update in client.track(flow_id):
            progress.update(update)
            outcome = update.outcome or outcome
    finally:
        progress.close()
    if outcome is None:
        fail(f"the progress of flow {flow_id} ended without its outcome: try `parley flow result`")
    return _print_outcome(outcome, as_json, {**facts, "steps": steps_json(progress.printed)})


def _print_outcome(outcome: FlowOutcome, as_json: bool, facts: dict[str, Any]) -> int:
    from parley.cli.render import outcome_json, outcome_text  # noqa: PLC0415 (rich)

    if as_json:
        dump_json({**facts, **outcome_json(outcome)})
    elif outcome.completed:
        typer.echo(outcome_text(outcome))
    else:
        typer.secho(f"error: {outcome_text(outcome)}", err=True, fg="red")
    return 0 if outcome.completed else 1


def dump_json(document: object) -> None:
    """Print ``document`` as JSON on stdout (``--json``)."""
    from parley.cli.render import dump  # noqa: PLC0415 (rich)

    dump(document)


def _console() -> Any:
    from rich.console import Console  # noqa: PLC0415 (rich is slow to import)

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: room for whole ids and waits, no folding
        console = Console(highlight=False, width=max(console.width, 200))
    return console


@flow_app.command("check-replay")
def flow_check_replay(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The node's data directory (or a database file).")
    ],
    apps: Annotated[
        list[str] | None,
        typer.Option("--app", help="Module of the new code to check against (repeatable)."),
    ] = None,
    app_paths: Annotated[
        list[Path] | None,
        typer.Option("--app-path", help="Directory to import the apps from (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check that every flow stored by a node replays with new code, before deploying it.

    Replays each stored checkpoint against the given apps without running anything external (no
    sends, no operations, no writes), on a copy: the node's database is never written. Exits 0
    if every flow replays (the upgrade is safe), 1 if some would fail (they are listed), 2 for
    bad input.
    """
    from parley.engine.apps import AppNotFoundError, load_apps  # noqa: PLC0415 (imports the apps)
    from parley.engine.replay import replay_database  # noqa: PLC0415 (the engine, SQLite)
    from parley.store.maintenance import database_path  # noqa: PLC0415

    target = database_path(data_dir)
    if not target.exists():
        fail(f"no node database at {target}: give the node's --data-dir", 2)
    try:
        load_apps(apps or [], app_paths or [])
    except AppNotFoundError as exc:
        fail(str(exc), 2)
    report = replay_database(target)
    failures = [result for _, result in report.failures]
    if as_json:
        dump_json(
            {
                "database": str(target),
                "flows": len(report),
                "ok": report.ok,
                "failures": [
                    {
                        "flow_id": r.flow_id,
                        "flow_class": r.flow_class,
                        "pending": r.pending,
                        "error_type": r.error_type,
                        "error": r.error,
                    }
                    for r in failures
                ],
            }
        )
    else:
        for r in failures:
            typer.echo(f"{r.flow_id} {r.flow_class} (waits on {r.pending}): {r.error}")
        verdict = "safe to deploy" if report.ok else "NOT safe: these flows would fail"
        typer.echo(f"{len(report)} stored flows checked, {len(failures)} would fail: {verdict}")
    raise typer.Exit(0 if report.ok else 1)


@rpc_command
def node_drain(
    node: NodeOption,
    *,
    rpc: Rpc,
) -> None:
    """Drain a running node: no new flows start, running ones finish (for an upgrade)."""
    with connected(node, rpc) as client:
        answer = client.drain()
    state = "drained (no flow running)" if answer.get("drained") else "draining"
    typer.echo(f"{node} is {state}; `parley node undrain --node {node}` takes new work again")


@rpc_command
def node_undrain(
    node: NodeOption,
    *,
    rpc: Rpc,
) -> None:
    """Let a drained node take new work again (starts, and the peers' held session-inits)."""
    with connected(node, rpc) as client:
        client.undrain()
    typer.echo(f"{node} takes new work again")
