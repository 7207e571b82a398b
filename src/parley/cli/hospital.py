"""``parley hospital``: the flows a node keeps for observation; look at them, retry or kill them.

The same connection options, errors and exit codes as ``parley flow`` (:mod:`parley.cli.flow`);
the user needs the ``Hospital`` permission.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from parley.cli.flow import JsonOption, NodeOption, Rpc, connected, dump_json, rpc_command
from parley.cli.network import hint

hospital_app = typer.Typer(
    help="The flow hospital of a running node: list, show, retry and kill kept flows.",
    no_args_is_help=True,
)

FlowIdArgument = Annotated[str, typer.Argument(help="The flow's id.")]


@hospital_app.command("list")
@rpc_command
def hospital_list(
    node: NodeOption,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """List the flows kept for observation, with the error that put each there."""
    with connected(node, rpc) as client:
        kept = client.hospital_list()
    if as_json:
        dump_json(kept)
        return
    if not kept:
        hint(f"node {node} keeps no flow for observation")
        return
    from rich.console import Console  # noqa: PLC0415 (rich is slow to import)
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"Flows kept for observation on {node}", title_justify="left")
    for column in ("flow id", "class", "error", "staff", "since"):
        table.add_column(column, overflow="fold", no_wrap=column == "flow id")
    for row in kept:
        admission: dict[str, Any] = row.get("admission") or {}
        error = f"{admission.get('error_type', '?')}: {admission.get('message', '')}"
        table.add_row(
            str(row["flow_id"]),
            str(row.get("flow_class") or "?"),
            error if admission else "(no admission stored yet)",
            str(admission.get("staff", "")),
            str(admission.get("time", "")),
        )
    Console(highlight=False).print(table)


@hospital_app.command("show")
@rpc_command
def hospital_show(
    flow_id: FlowIdArgument,
    node: NodeOption,
    as_json: JsonOption = False,
    *,
    rpc: Rpc,
) -> None:
    """Show a flow and each of its visits to the hospital, with the tracebacks."""
    with connected(node, rpc) as client:
        shown = client.hospital_show(flow_id)
    if as_json:
        dump_json(shown)
        return
    flow: dict[str, Any] = shown.get("flow") or {}
    typer.echo(f"flow {flow_id} ({flow.get('flow_class', '?')}): {flow.get('status', 'gone')}")
    if flow.get("waiting_for"):
        typer.echo(f"waiting for {flow['waiting_for']}")
    for number, visit in enumerate(shown.get("admissions", []), 1):
        typer.echo(
            f"\nadmission {number} at {visit['time']}: {visit['error_type']}: {visit['message']}"
            f"\n  staff {visit['staff']} decided: {visit['outcome']}"
        )
        typer.echo("  " + str(visit.get("traceback", "")).rstrip().replace("\n", "\n  "))


@hospital_app.command("retry")
@rpc_command
def hospital_retry(
    flow_id: FlowIdArgument,
    node: NodeOption,
    *,
    rpc: Rpc,
) -> None:
    """Retry a kept flow from its last checkpoint now (it comes back if it fails again)."""
    with connected(node, rpc) as client:
        client.hospital_retry(flow_id)
    typer.echo(f"retrying flow {flow_id} on {node}")


@hospital_app.command("kill")
@rpc_command
def hospital_kill(
    flow_id: FlowIdArgument,
    node: NodeOption,
    *,
    rpc: Rpc,
) -> None:
    """Kill a kept flow: it ends and its counterparties are told."""
    with connected(node, rpc) as client:
        client.hospital_kill(flow_id)
    typer.echo(f"killed flow {flow_id} on {node}")
