"""What ``parley demo`` says: steps, tables and errors (:class:`Output`), and both sides'
progress trees (:class:`Trees`): live side by side on a terminal, else one line per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from parley.rpc.models import FlowOutcome, ProgressUpdate


class Output:
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

    def trees(self) -> Trees:
        return Trees(self.console)


class Trees:
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
                root.add("[green]✓ done[/]" if done else f"[red]✗ {why(update.outcome)}[/]")
        for note in self.notes[side]:
            root.add(note)
        return root


def why(outcome: FlowOutcome) -> str:
    return f"{(outcome.error_type or '?').rpartition(':')[2]}: {outcome.error_message}"
