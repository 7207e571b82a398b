"""``parley``: run nodes from the command line."""

from __future__ import annotations

import logging
import signal
import threading
import tomllib
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="parley",
    help="Parley: durable, peer-to-peer, multi-party flows.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
node_app = typer.Typer(help="Run a node.", no_args_is_help=True)
app.add_typer(node_app, name="node")

#: Keys a ``parley.toml`` may set under ``[node]`` (the same names as the flags).
CONFIG_KEYS = {
    "name",
    "nats",
    "data_dir",
    "apps",
    "workers",
    "max_live_flows",
    "synchronous",
    "passivate_after",
}


def load_config(path: Path) -> dict[str, Any]:
    """Read the ``[node]`` table of a ``parley.toml``; unknown keys are an error."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise typer.BadParameter(f"no such config file: {path}", param_hint="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise typer.BadParameter(f"{path} is not valid TOML: {exc}", param_hint="--config") from exc
    table = data.get("node", {})
    if not isinstance(table, dict):
        raise typer.BadParameter(f"[node] in {path} must be a table", param_hint="--config")
    unknown = sorted(set(table) - CONFIG_KEYS)
    if unknown:
        raise typer.BadParameter(
            f"unknown keys in [node] of {path}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(CONFIG_KEYS))})",
            param_hint="--config",
        )
    return table


def _as_list(value: object) -> list[Any]:
    """A parley.toml value that may be one item or a list of them."""
    return list(value) if isinstance(value, list | tuple) else [value]


@node_app.command("run")
def node_run(
    name: Annotated[
        str | None, typer.Option(help="The node's name (its address on the network).")
    ] = None,
    nats: Annotated[
        str | None, typer.Option(help="NATS URL; without it an embedded nats-server is started.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory for the node's SQLite file (default: ./<name>).")
    ] = None,
    app_modules: Annotated[
        list[str] | None, typer.Option("--app", help="Module with flows to run (repeatable).")
    ] = None,
    app_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--app-path",
            help="Directory to import apps from, before installed packages (repeatable).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A parley.toml with a \\[node] table (flags win).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="Flow worker threads.")
    ] = None,
    max_live_flows: Annotated[
        int | None, typer.Option(min=1, help="Flows kept in memory; the rest are passivated.")
    ] = None,
    synchronous: Annotated[
        str | None, typer.Option(help="SQLite synchronous level: FULL (default) or NORMAL.")
    ] = None,
    passivate_after: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds a waiting flow stays in memory (default 60)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a node until interrupted (Ctrl-C or SIGTERM stop it gracefully)."""
    # Imported here, not at the top: the node pulls in pykka, NATS and SQLite, and `parley --help`
    # and shell completion should not pay for them.
    from parley.engine.apps import AppNotFoundError  # noqa: PLC0415
    from parley.engine.logcontext import install  # noqa: PLC0415
    from parley.node import Node, NodeConfig  # noqa: PLC0415

    settings: dict[str, Any] = load_config(config) if config else {}
    flags = {
        "name": name,
        "nats": nats,
        "data_dir": data_dir,
        "apps": app_modules or None,
        "app_path": app_paths or None,
        "workers": workers,
        "max_live_flows": max_live_flows,
        "synchronous": synchronous,
        "passivate_after": passivate_after,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    if not settings.get("name"):
        raise typer.BadParameter(
            "a node needs a name (--name or name in parley.toml)", param_hint="--name"
        )
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    install(level=level)
    node_name = str(settings["name"])
    try:
        node_config = NodeConfig(
            name=node_name,
            data_dir=Path(settings.get("data_dir") or node_name),
            nats_url=settings.get("nats"),
            apps=list(settings.get("apps", [])),
            app_paths=[Path(p) for p in _as_list(settings.get("app_path", []))],
            workers=int(settings.get("workers", 2)),
            max_live_flows=int(settings.get("max_live_flows", 10_000)),
            synchronous=str(settings.get("synchronous", "FULL")),
            passivate_after=float(settings.get("passivate_after", 60.0)),
        )
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        node = Node(node_config).start()
    except AppNotFoundError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from exc
    except Exception as exc:
        typer.secho(f"error: node {node_name} failed to start: {exc}", err=True, fg="red")
        raise typer.Exit(1) from exc
    typer.echo(f"node {node_name} running on {node.url} (data in {node_config.data_dir})", err=True)
    try:
        stop.wait()
    finally:
        node.stop()
        typer.echo(f"node {node_name} stopped", err=True)


@app.command()
def version() -> None:
    """Print Parley's version."""
    typer.echo(dist_version("parley-flows"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
