"""How the RPC commands show things: progress trees, flow tables, outcomes, and JSON.

Rules:

* stdout carries the data (a flow id, a table, a result, or JSON with ``--json``); advice and
  progress for a person go to stderr when stdout is data.
* Progress: on a terminal, a live tree (rich) with the steps passed, the current one and those to
  come, sub-flows' steps indented under the step that runs them; elsewhere (a pipe, a log, a
  test), one line per step as it is reached, indented the same way, so the output reads in order.
* ``--json`` prints one JSON document per command (``flow list --watch --json``: one per change,
  a line each). Values become JSON as data, not as Python: Decimals and datetimes as strings,
  dataclasses as objects of their fields.

Imported by the commands only when they run: rich is slow to import.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import time
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from parley.protocol.errors import CodecError
from parley.rpc.models import FlowOutcome, FlowRow, ProgressRow, ProgressUpdate

__all__ = [
    "LineProgress",
    "LiveProgress",
    "dump",
    "flow_table",
    "outcome_json",
    "outcome_text",
    "reached",
    "to_json",
]


def to_json(value: object) -> Any:
    """``value`` as plain JSON data."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_json(v) for v in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    return str(value)


def dump(document: object) -> None:
    typer.echo(json.dumps(to_json(document), indent=2))


# ---------------------------------------------------------------------- outcomes


def outcome_json(outcome: FlowOutcome) -> dict[str, Any]:
    """A flow's outcome as JSON data (the value decoded when this process knows its type)."""
    document: dict[str, Any] = {"flow_id": outcome.flow_id, "outcome": outcome.status}
    if outcome.completed:
        try:
            document["result"] = to_json(outcome.value())
        except CodecError:
            document["result"] = None  # a class this process lacks: the text says what it was
        document["result_text"] = outcome.value_text
        document["result_type"] = outcome.value_type
    else:
        document["error"] = {"type": outcome.error_type, "message": outcome.error_message}
    return document


def outcome_text(outcome: FlowOutcome) -> str:
    """A flow's outcome in one line: its value, or how it failed."""
    if outcome.completed:
        try:
            value = outcome.value()
        except CodecError:
            return outcome.value_text or ""
        return value if isinstance(value, str) else json.dumps(to_json(value))
    verb = "was killed" if outcome.status == "killed" else "failed"
    return f"flow {outcome.flow_id} {verb}: {outcome.error_type}: {outcome.error_message}"


# ---------------------------------------------------------------------- progress


def reached(tree: Iterable[ProgressRow]) -> list[tuple[tuple[str, ...], ProgressRow, str]]:
    """Each step with its path of labels and its state: ``done``, ``current`` or ``pending``.

    Steps before the deepest current one (in the tree's order) are done; so is everything once
    the flow's own steps reached ``Done``.
    """
    rows = list(tree)
    paths: list[tuple[str, ...]] = []
    stack: list[str] = []
    for row in rows:
        del stack[row.level :]
        stack.append(row.label)
        paths.append(tuple(stack))
    current: list[int] = []
    for index, row in enumerate(rows):
        if row.level < len(current):
            break
        if row.current and row.level == len(current):
            current.append(index)
    deepest = current[-1] if current else -1
    states = []
    for index, row in enumerate(rows):
        if index in current and row.label != "Done":
            state = "current"
        elif index <= deepest:
            state = "done"
        else:
            state = "pending"
        states.append((paths[index], row, state))
    return states


class LineProgress:
    """Progress as lines: each step once, when it is first reached (for pipes and logs).

    Args:
        quiet: print nothing, only collect the steps (for ``--json``).
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        #: The steps reached, in order, as paths of labels.
        self.printed: list[tuple[str, ...]] = []

    def update(self, update: ProgressUpdate) -> None:
        # A snapshot tells where the flow is, not how it got there: take the steps before the
        # current one as passed. After it, each change names the step it reached.
        passed = ("done", "current") if update.kind == "snapshot" else ("current",)
        for path, row, state in reached(update.tree):
            if state not in passed or row.label == "Done" or path in self.printed:
                continue
            self.printed.append(path)
            if not self.quiet:
                typer.echo("  " * row.level + row.label, err=True)
        if self.quiet:
            return
        if update.kind == "error" and update.error:
            typer.echo(f"error in step {update.step}: {update.error}", err=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """Progress as a live tree on a terminal."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        from rich.live import Live  # noqa: PLC0415 (only on a terminal)

        self.title = title
        self.console = console or Console(stderr=True, highlight=False)
        self.live = Live(Tree(title), console=self.console, refresh_per_second=10)
        self.live.start()
        self.printed: list[tuple[str, ...]] = []

    def update(self, update: ProgressUpdate) -> None:
        root = Tree(Text(self.title, style="bold"))
        branches: list[Tree] = [root]
        for path, row, state in reached(update.tree):
            if row.label == "Done":
                continue
            mark = {"done": "[green]✓[/]", "current": "[yellow]▶[/]", "pending": "[dim]·[/]"}
            style = "dim" if state == "pending" else ""
            del branches[row.level + 1 :]
            parent = branches[min(row.level, len(branches) - 1)]
            label = escape(row.label)
            branch = parent.add(
                f"{mark[state]} [{style}]{label}[/]" if style else f"{mark[state]} {label}"
            )
            branches.append(branch)
            if state != "pending" and path not in self.printed:
                self.printed.append(path)
        if update.kind == "error" and update.error:
            root.add(f"[red]error: {escape(update.error)}[/]")
        self.live.update(root)

    def close(self) -> None:
        self.live.stop()


def steps_json(printed: Iterable[tuple[str, ...]]) -> list[str]:
    return [" / ".join(path) for path in printed]


# ---------------------------------------------------------------------- flow lists


def flow_table(rows: list[FlowRow], title: str) -> RenderableType:
    """The flow list as a table: id, class, status, step, what it waits on, since when."""
    table = Table(title=title, title_justify="left")
    table.add_column("flow id", no_wrap=True)
    table.add_column("class", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("step", overflow="fold")
    table.add_column("waiting for", overflow="fold")
    table.add_column("since", no_wrap=True)
    colours = {"RUNNABLE": "green", "HOSPITALIZED": "red", "FAILED": "red", "KILLED": "yellow"}
    for row in rows:
        colour = colours.get(row.status, "")
        status = f"[{colour}]{row.status}[/]" if colour else row.status
        table.add_row(
            row.flow_id,
            row.flow_class or "?",
            status,
            row.progress_step or "",
            row.waiting_for or "",
            _ago(row.since),
        )
    return table


def _ago(when: float | None) -> str:
    if when is None:
        return ""
    seconds = max(0, int(time.time() - when))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M")
