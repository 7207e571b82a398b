"""``parley``: run nodes and operate a network from the command line (``parley network`` is in
:mod:`parley.cli.network`)."""

from __future__ import annotations

import logging
import signal
import threading
import tomllib
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from parley.cli.demo import demo
from parley.cli.flow import flow_app, node_drain, node_undrain
from parley.cli.health import node_health
from parley.cli.hospital import hospital_app
from parley.cli.nats import nats_app
from parley.cli.network import OPERATOR_PUBLIC_FILE, check_name, fail, hint, network_app
from parley.cli.store import node_backup, node_check
from parley.cli.users import add_user, load_users
from parley.cli.wire import wire_app

if TYPE_CHECKING:
    from parley.node import NodeConfig

app = typer.Typer(
    name="parley",
    help="Parley: durable, peer-to-peer, multi-party flows.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
node_app = typer.Typer(help="Create a node's identity; run a node.", no_args_is_help=True)
app.add_typer(node_app, name="node")
node_app.command("health")(node_health)
node_app.command("check")(node_check)
node_app.command("backup")(node_backup)
node_app.command("drain")(node_drain)
node_app.command("undrain")(node_undrain)
app.add_typer(network_app, name="network")
app.add_typer(flow_app, name="flow")
app.add_typer(hospital_app, name="hospital")
app.add_typer(nats_app, name="nats")
app.add_typer(wire_app, name="wire")
app.command("demo")(demo)

#: Keys a ``parley.toml`` may set under ``[node]`` (the same names as the flags).
CONFIG_KEYS = {
    "name",
    "nats",
    "stream_replicas",
    "data_dir",
    "apps",
    "workers",
    "max_live_flows",
    "synchronous",
    "passivate_after",
    "operator_key",
    "map_wait",
    "nats_nkey",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "rpc",
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


def node_directory(data_dir: Path | None, config: Path | None) -> Path:
    """The data directory of the node a command is about: ``--data-dir``, or the config's."""
    if data_dir is not None:
        return data_dir
    if config is None:
        fail("say which node: --data-dir DIR, or --config with the node's parley.toml", 2)
    settings = load_config(config)
    where = settings.get("data_dir") or settings.get("name")
    if not where:
        fail(f"{config} names no data_dir (nor a name, whose ./<name> is the default)", 2)
    return Path(str(where)).expanduser()


def _as_list(value: object) -> list[Any]:
    """A parley.toml value that may be one item or a list of them."""
    return list(value) if isinstance(value, list | tuple) else [value]


@node_app.command("init")
def node_init(
    name: Annotated[str, typer.Option(help="The node's name (its address on the network).")],
    data_dir: Annotated[
        Path | None, typer.Option(help="The node's directory (default: ./<name>).")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Also make a \\[\\[users]] entry for this RPC user.")
    ] = None,
    permissions: Annotated[
        list[str] | None,
        typer.Option(
            "--permission",
            help="The user's permission (repeatable): StartFlow.<module:Class>, KillFlow, "
            "ReadFlows, Signal, Hospital or ALL.",
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="PARLEY_PASSWORD", help="The user's password (else asked for)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Append the user's entry to this parley.toml.")
    ] = None,
) -> None:
    """Create the node's identity key if it has none, and print its public key (U...).

    With --user, also hash a password for an RPC user and print its \\[\\[users]] entry
    (or append it to --config).
    """
    # Imported here: the key code pulls in PyNaCl, which `parley --help` does not need.
    from parley.identity.keys import IDENTITY_FILE, IdentityError, load_identity  # noqa: PLC0415

    check_name(name)
    directory = data_dir or Path(name)
    existed = (directory / IDENTITY_FILE).exists()
    try:
        key = load_identity(directory)
    except IdentityError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"can't create the key in {directory}: {exc.strerror}")
    typer.echo(key.public_key)
    what = "has the key" if existed else "now has the key"
    hint(
        f"{directory / IDENTITY_FILE} {what} above. The network operator admits the node with "
        f"`parley network admit {name} {key.public_key}`; run it with --operator-key "
        f"(the operator's {OPERATOR_PUBLIC_FILE} or key)"
    )
    if user is not None:
        add_user(user, list(permissions or []), password, config)


@node_app.command("run")
def node_run(
    name: Annotated[
        str | None, typer.Option(help="The node's name (its address on the network).")
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option(
            envvar="PARLEY_NATS_URL",
            help="NATS URL, or a cluster's URLs separated by commas; without it an embedded "
            "nats-server is started.",
        ),
    ] = None,
    stream_replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            help="Servers that keep each stream the node creates: 1 (default), 3 on a cluster.",
        ),
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
    operator_key: Annotated[
        str | None,
        typer.Option(
            help="The network operator's public key (O...), or a file holding it. Without it "
            "messages are not authenticated (development only)."
        ),
    ] = None,
    map_wait: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds to wait at start for the network map (default 5)."),
    ] = None,
    nats_nkey: Annotated[
        bool | None,
        typer.Option(
            "--nats-nkey/--no-nats-nkey",
            help="Authenticate to NATS with the node's key (default: off).",
        ),
    ] = None,
    nats_tls_ca: Annotated[
        Path | None, typer.Option(help="TLS: the CA the NATS server's certificate chains to.")
    ] = None,
    nats_tls_cert: Annotated[
        Path | None, typer.Option(help="TLS: a client certificate (PEM), with --nats-tls-key.")
    ] = None,
    nats_tls_key: Annotated[
        Path | None, typer.Option(help="TLS: the client certificate's key (PEM).")
    ] = None,
    rpc: Annotated[
        bool | None,
        typer.Option("--rpc/--no-rpc", help="Serve RPC to --config's \\[\\[users]] (default)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a node until interrupted (Ctrl-C or SIGTERM stop it gracefully)."""
    settings: dict[str, Any] = load_config(config) if config else {}
    flags = {
        "name": name,
        "nats": nats,
        "stream_replicas": stream_replicas,
        "data_dir": data_dir,
        "apps": app_modules or None,
        "app_path": app_paths or None,
        "workers": workers,
        "max_live_flows": max_live_flows,
        "synchronous": synchronous,
        "passivate_after": passivate_after,
        "operator_key": operator_key,
        "map_wait": map_wait,
        "nats_nkey": nats_nkey,
        "nats_tls_ca": nats_tls_ca,
        "nats_tls_cert": nats_tls_cert,
        "nats_tls_key": nats_tls_key,
        "rpc": rpc,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings["rpc_users"] = load_users(config) if config else []
    if not settings.get("name"):
        raise typer.BadParameter(
            "a node needs a name (--name or name in parley.toml)", param_hint="--name"
        )
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    _run_node(settings, level)


def _run_node(settings: dict[str, Any], level: int) -> None:
    """Start the node ``settings`` describe and run it until SIGTERM or Ctrl-C."""
    # Imported here, not at the top: the node pulls in pykka, NATS and SQLite, and `parley --help`
    # and shell completion should not pay for them.
    from parley.engine.apps import AppNotFoundError  # noqa: PLC0415
    from parley.engine.logcontext import install  # noqa: PLC0415
    from parley.node import Node  # noqa: PLC0415

    node_config = _node_config(settings)
    install(level=level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    node_name = node_config.name
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


def _node_config(settings: dict[str, Any]) -> NodeConfig:
    """The node's configuration from flags and file; what is wrong with it is a one-line error."""
    from parley.node import NodeConfig  # noqa: PLC0415 (pykka, NATS, SQLite: see _run_node)

    node_name = str(settings["name"])
    tls = {k: _path(settings, k) for k in ("nats_tls_ca", "nats_tls_cert", "nats_tls_key")}
    if settings.get("nats") is None and any(tls.values()):
        fail("--nats-tls-* need --nats: the embedded nats-server runs without TLS", 2)
    nkey = settings.get("nats_nkey", False)
    if not isinstance(nkey, bool):
        fail(f"nats_nkey must be true or false, not {nkey!r}", 2)
    operator = settings.get("operator_key")
    if not isinstance(settings.get("rpc", True), bool):
        fail(f"rpc must be true or false, not {settings['rpc']!r}", 2)
    try:
        return NodeConfig(
            name=node_name,
            data_dir=Path(settings.get("data_dir") or node_name),
            nats_url=settings.get("nats"),
            stream_replicas=_int(settings, "stream_replicas", 1),
            apps=list(settings.get("apps", [])),
            app_paths=[Path(p) for p in _as_list(settings.get("app_path", []))],
            workers=int(settings.get("workers", 2)),
            max_live_flows=int(settings.get("max_live_flows", 10_000)),
            synchronous=str(settings.get("synchronous", "FULL")),
            passivate_after=float(settings.get("passivate_after", 60.0)),
            operator_key=operator_public_key(str(operator)) if operator is not None else None,
            map_wait=float(settings.get("map_wait", 5.0)),
            nats_nkey=nkey,
            nats_tls_ca=tls["nats_tls_ca"],
            nats_tls_cert=tls["nats_tls_cert"],
            nats_tls_key=tls["nats_tls_key"],
            rpc=settings.get("rpc", True),
            rpc_users=settings.get("rpc_users", []),
        )
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def _int(settings: dict[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{key} must be a whole number, not {value!r}", 2)
    return value


def _path(settings: dict[str, Any], key: str) -> Path | None:
    value = settings.get(key)
    return Path(str(value)).expanduser() if value is not None else None


def _operator_kind() -> int:
    import nkeys  # noqa: PLC0415 (PyNaCl, only for commands that handle keys)

    kind: int = nkeys.PREFIX_BYTE_OPERATOR
    return kind


def operator_public_key(value: str, what: str = "--operator-key") -> str:
    """The operator's public key (``O...``) from ``value``: the key itself or a file holding it."""
    from parley.identity.keys import is_public_key  # noqa: PLC0415 (PyNaCl)

    text = value.strip()
    if is_public_key(text, kind=_operator_kind()):
        return text
    path = Path(value).expanduser()
    if text.startswith("S") and not path.exists():
        fail(f"{what} S... is a seed, which is secret: nodes get the operator's public key", 2)
    if not path.is_file():
        fail(
            f"{what} {value!r} is neither the operator's public key (O..., 56 characters) nor a "
            f"file holding it (`parley network init` writes {OPERATOR_PUBLIC_FILE})",
            2,
        )
    try:
        content = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{what}: can't read {path}: {exc}", 2)
    if content.startswith("S"):
        fail(
            f"{what}: {path} holds a secret seed; nodes get only the operator's public key "
            f"(the {OPERATOR_PUBLIC_FILE} that `parley network init` wrote)",
            2,
        )
    if not is_public_key(content, kind=_operator_kind()):
        fail(f"{what}: {path} does not hold an operator public key (O...)", 2)
    return content


@app.command()
def version() -> None:
    """Print Parley's version."""
    typer.echo(dist_version("parley-flows"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
