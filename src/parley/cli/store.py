"""``parley node check`` and ``parley node backup``: a node's database, checked and copied online.

Both read the database read-only and may run while the node runs (WAL: the node goes on writing).
``check`` exits 0 for a healthy database and 1 otherwise (``--json`` prints the whole report);
``backup`` writes a consistent copy made with SQLite's online backup, checks the copy, and only then
puts it at PATH. Bad input (no database there, a PATH that exists) exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from parley.cli.network import fail

if TYPE_CHECKING:
    from parley.store.maintenance import StoreCheck

DataDirOption = Annotated[
    Path | None, typer.Option(help="The node's data directory (where parley.sqlite is).")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(help="The node's parley.toml: its data_dir (or ./<name>) is the directory."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as one JSON document.")]


def node_check(
    data_dir: DataDirOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Check the node's database: integrity, schema version, rows of flows that are gone.

    Exits 0 if it is healthy, 1 if not (each problem on a line), 2 if there is no database.
    """
    # Imported here: `parley --help` does not need the store; parley.cli.main imports this module.
    from parley.cli.main import node_directory  # noqa: PLC0415
    from parley.store.maintenance import check_database, database_path  # noqa: PLC0415

    path = database_path(node_directory(data_dir, config))
    try:
        report = check_database(path)
    except FileNotFoundError:
        fail(f"no database at {path}: is --data-dir the node's directory?", 2)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
    else:
        _print(report)
    if not report.healthy:
        raise typer.Exit(1)


def node_backup(
    target: Annotated[Path, typer.Argument(help="Where the copy goes (a new file).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Replace TARGET if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy the node's database to TARGET, consistently, also while the node runs.

    The copy is one file, checked (like `parley node check`) before it is put in place.
    """
    from parley.cli.main import node_directory  # noqa: PLC0415 (main imports this module)
    from parley.store.maintenance import BackupError, backup_database, database_path  # noqa: PLC0415

    source = database_path(node_directory(data_dir, config))
    if target.is_dir():
        target = target / source.name
    try:
        report = backup_database(source, target, overwrite=force)
    except FileExistsError:
        fail(f"{target} exists already: give --force to replace it, or another path", 2)
    except FileNotFoundError as exc:
        fail(f"{exc}", 2)
    except BackupError as exc:
        fail(str(exc), 1)
    if as_json:
        typer.echo(json.dumps({"source": str(source), **report.to_json()}, indent=1))
        return
    typer.echo(
        f"backed up {source} to {target}: {report.size_bytes:,} bytes, "
        f"{report.counts.get('flows', 0)} flows, checked healthy"
    )


def _print(report: StoreCheck) -> None:
    state = "healthy" if report.healthy else "NOT HEALTHY"
    typer.echo(f"{report.path}: {state}")
    typer.echo(f"  integrity: {'ok' if report.integrity == ['ok'] else 'FAILED'}")
    typer.echo(
        f"  schema: version {report.schema_version} (this Parley writes {report.known_version})"
    )
    if report.counts:
        counted = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counts.items())
        typer.echo(f"  {counted}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    for problem in report.problems:
        typer.echo(f"  problem: {problem}")
