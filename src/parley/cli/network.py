"""``parley network``: the network operator's commands (keys, the network map, NATS authorization).

Rules:

* The operator's directory (``--dir``, default ``./network``, or ``PARLEY_NETWORK_DIR``) holds
  ``operator.nk`` (the operator's seed, ``SO...``: it signs the map's entries and never leaves the
  operator's machine), ``operator.pub`` (its public key, for the nodes' ``--operator-key``) and
  ``admin.nk`` (the NKey user, ``SU...``, that the admin tooling connects to NATS with). Keys are
  created once, owner-only, and never overwritten.
* The commands that talk to NATS (``admit``, ``revoke``, ``list``, ``nats-config`` without
  ``--node``) authenticate with ``admin.nk`` when it exists (``--no-nats-nkey`` turns that off): a
  server without authorization ignores the key, so a local development server keeps working.
* Errors are one line on stderr (``error: ...``) saying what to do: exit code 2 for bad input (a
  malformed name, key or file), 1 for what is missing or unreachable (a key file, a node, the NATS
  server). No traceback.
* Heavy imports (NATS, PyNaCl, rich) happen inside the commands, so ``parley --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from parley.cli.options import grouped

if TYPE_CHECKING:
    from parley.identity.netmap import NodeEntry
    from parley.transport.admin import AdminError, NetworkAdmin

T = TypeVar("T")

network_app = typer.Typer(
    help="Operate a network: keys, admitting and revoking nodes, NATS authorization.",
    no_args_is_help=True,
)

OPERATOR_FILE = "operator.nk"
OPERATOR_PUBLIC_FILE = "operator.pub"
ADMIN_FILE = "admin.nk"
DEFAULT_NATS = "nats://127.0.0.1:4222"
#: The admin's reply subjects: ``_INBOX.>``, which no node's permissions grant (nodes get only
#: ``_INBOX_<node>.>``), so no node can read the answers the admin gets.
ADMIN_INBOX = "_INBOX"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit with ``code`` (2: bad input; 1: missing or unreachable)."""
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)


def hint(message: str) -> None:
    """Advice for the person at the terminal, on stderr (stdout stays parseable)."""
    typer.echo(message, err=True)


# ---------------------------------------------------------------------- options shared by commands

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="PARLEY_NETWORK_DIR",
        help="The operator's directory (operator.nk, operator.pub, admin.nk).",
    ),
]
NatsOption = Annotated[
    str, typer.Option("--nats", envvar="PARLEY_NATS_URL", help="The network's NATS server(s).")
]
NkeyOption = Annotated[
    bool | None,
    typer.Option(
        "--nats-nkey/--no-nats-nkey",
        help="Authenticate to NATS with admin.nk (default: when admin.nk exists).",
    ),
]
CaOption = Annotated[
    Path | None, typer.Option("--nats-tls-ca", help="TLS: the CA the server's certificate needs.")
]
CertOption = Annotated[
    Path | None, typer.Option("--nats-tls-cert", help="TLS: a client certificate (PEM).")
]
KeyOption = Annotated[
    Path | None, typer.Option("--nats-tls-key", help="TLS: the client certificate's key (PEM).")
]
TimeoutOption = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for NATS on each operation.")
]


@dataclass(frozen=True)
class Connection:
    """How the admin tooling reaches NATS (the options every NATS command takes)."""

    directory: Path
    url: str
    nkey: bool | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    timeout: float

    def options(self, errors: list[BaseException]) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``; connection errors are collected in ``errors``."""
        # Imported here: NatsAuth pulls in nats-py and nkeys, which `parley --help` doesn't need.
        from parley.transport.security import NatsAuth, NatsSecurityError  # noqa: PLC0415

        seed = self._admin_seed()
        try:
            auth = NatsAuth(
                seed=seed,
                ca_file=self.tls_ca,
                cert_file=self.tls_cert,
                key_file=self.tls_key,
                inbox_prefix=ADMIN_INBOX,
            )
            options = auth.connect_options("admin")
        except NatsSecurityError as exc:
            fail(str(exc), 2)

        async def collect(exc: Exception) -> None:  # instead of nats-py logging a traceback
            errors.append(exc)

        # An interactive command: two attempts half a second apart, not nats-py's 60 over 2 min.
        options.update(error_cb=collect, max_reconnect_attempts=1, reconnect_time_wait=0.5)
        return options

    def _admin_seed(self) -> str | None:
        from parley.identity.keys import IdentityError, read_key  # noqa: PLC0415 (PyNaCl)

        path = self.directory / ADMIN_FILE
        if self.nkey is False or (self.nkey is None and not path.exists()):
            return None
        if not path.exists():
            fail(_missing(path, "admin", self.directory))
        try:
            return read_key(path, kind=_user_kind()).seed
        except IdentityError as exc:
            fail(str(exc))


def _connection_options(
    directory: DirOption = Path("network"),
    nats: NatsOption = DEFAULT_NATS,
    nats_nkey: NkeyOption = None,
    nats_tls_ca: CaOption = None,
    nats_tls_cert: CertOption = None,
    nats_tls_key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> Connection:
    return Connection(directory, nats, nats_nkey, nats_tls_ca, nats_tls_cert, nats_tls_key, timeout)


#: Gives a command (with a ``connection: Connection`` parameter) the operator directory and NATS
#: connection options.
nats_command = grouped("connection", _connection_options)


def _missing(path: Path, what: str, directory: Path) -> str:
    return f"no {what} key at {path}: create it with `parley network init --dir {directory}`"


def _user_kind() -> int:
    import nkeys  # noqa: PLC0415 (PyNaCl, only for commands that handle keys)

    kind: int = nkeys.PREFIX_BYTE_USER
    return kind


class Admin:
    """A :class:`NetworkAdmin` for one command, whose failures become one-line errors."""

    def __init__(self, connection: Connection) -> None:
        from parley.identity.keys import IdentityError, operator_key  # noqa: PLC0415 (PyNaCl)
        from parley.transport.admin import NetworkAdmin  # noqa: PLC0415 (nats-py)

        path = connection.directory / OPERATOR_FILE
        if not path.exists():
            fail(_missing(path, "operator", connection.directory) + " (or --dir the one with it)")
        try:
            operator = operator_key(path)
        except IdentityError as exc:
            fail(str(exc))
        self.connection = connection
        self.errors: list[BaseException] = []
        self.admin: NetworkAdmin = NetworkAdmin(
            connection.url,
            operator,
            connection.options(self.errors),
            timeout=connection.timeout,
        )

    @property
    def operator_public_key(self) -> str:
        return self.admin.operator.public_key

    def admit(
        self, name: str, keys: list[str], apps: list[str], stream_replicas: int = 1
    ) -> NodeEntry:
        return self._call(
            lambda: self.admin.admit(name, keys, apps=apps, stream_replicas=stream_replicas)
        )

    def revoke(self, name: str) -> NodeEntry:
        return self._call(lambda: self.admin.revoke(name))

    def entries(self) -> list[NodeEntry]:
        return sorted(self._call(self.admin.entries).values(), key=lambda e: e.name)

    def _call(self, operation: Callable[[], T]) -> T:
        from parley.transport.admin import AdminError  # noqa: PLC0415 (nats-py)

        try:
            return operation()
        except AdminError as exc:
            fail(self._explain(exc))

    def _explain(self, exc: AdminError) -> str:
        """The admin's error, with why NATS could not be used and what to check."""
        message = str(exc)
        if message.startswith("the operation on"):
            return (
                f"{message}: does the server run JetStream (nats-server -js), and does its "
                "authorization give the admin's key every permission (`parley network "
                "nats-config`)?"
            )
        if not message.startswith("no NATS server"):
            return message
        # The last error nats-py reported (a refused socket, an authorization violation) says
        # more than the exception connect() ended with ("no servers available").
        seen = [e for e in (exc.__cause__, *self.errors) if e is not None and str(e)]
        last = seen[-1] if seen else None
        if last is not None and "authorization violation" in str(last).lower():
            return (
                f"the NATS server at {self.connection.url} refused the admin's credentials "
                f"({last}): connect with admin.nk (--nats-nkey, the default when --dir holds "
                "it), whose key must be in the server's authorization (`parley network "
                "nats-config`)"
            )
        return (
            f"{message}{f' ({last})' if last else ''}: is nats-server running there? Give its "
            "URL with --nats or PARLEY_NATS_URL, and its credentials with --nats-nkey and "
            "--nats-tls-*"
        )


def check_name(name: str) -> str:
    """``name`` if it is a node name; otherwise a one-line error (exit code 2)."""
    from parley.protocol.messages import is_node_name  # noqa: PLC0415 (the protocol package)

    if not is_node_name(name):
        fail(f"{name!r} is not a node name: use 1-128 characters from A-Z a-z 0-9 _ -", 2)
    return name


def check_user_key(key: str, what: str) -> str:
    """``key`` if it is a node's public NKey (``U...``); otherwise a one-line error saying why."""
    from parley.identity.keys import is_public_key  # noqa: PLC0415 (PyNaCl)

    if is_public_key(key, kind=_user_kind()):
        return key
    if key.startswith("S"):
        reason = "looks like a seed, which is secret: give the public key (U...)"
    elif key.startswith("O"):
        reason = "is an operator key: nodes are admitted under user keys (U...)"
    elif key.startswith("U") and len(key) == 56:
        reason = "is not a valid user key (a bad checksum: mistyped?)"
    else:
        reason = "is not a public user NKey (U..., 56 characters)"
    shown = "S..." if key.startswith("S") else key[:12] + ("..." if len(key) > 12 else "")
    fail(f"{what} {shown} {reason}", 2)


# ---------------------------------------------------------------------- commands


@network_app.command("init")
def network_init(directory: DirOption = Path("network")) -> None:
    """Create the operator's key and the admin's NATS key (never over existing ones)."""
    from parley.identity.keys import KeyPair, new_operator_key, write_key  # noqa: PLC0415 (PyNaCl)

    files = [directory / n for n in (OPERATOR_FILE, OPERATOR_PUBLIC_FILE, ADMIN_FILE)]
    existing = [str(f) for f in files if f.exists()]
    if existing:
        fail(
            f"refusing to overwrite {', '.join(existing)}: a network has one operator key, and a "
            "new one would orphan every node admitted under the old one. Use another --dir for a "
            "new network"
        )
    operator, admin = new_operator_key(), KeyPair.generate()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_key(directory / OPERATOR_FILE, operator)
        write_key(directory / ADMIN_FILE, admin)
        (directory / OPERATOR_PUBLIC_FILE).write_text(operator.public_key + "\n")
    except FileExistsError as exc:
        fail(f"refusing to overwrite {exc.filename} (created meanwhile?)")
    except OSError as exc:
        fail(f"can't write the keys in {directory}: {exc.strerror}")
    typer.echo(f"operator {operator.public_key}")
    typer.echo(f"admin    {admin.public_key}")
    hint(
        f"Created {directory / OPERATOR_FILE} (keep it offline: it signs the network map), "
        f"{directory / OPERATOR_PUBLIC_FILE} and {directory / ADMIN_FILE}.\n"
        "Next:\n"
        f"  1. on each node: `parley node init --name NAME`; it prints the node's key\n"
        f"  2. here: `parley network admit NAME KEY --dir {directory} --nats URL`\n"
        f"  3. run each node with `--operator-key {operator.public_key}`\n"
        f"  4. with NATS authorization: `parley network nats-config --dir {directory} --out "
        "parley-authorization.conf` (see docs/operators.md)"
    )


@network_app.command("admit")
@nats_command
def network_admit(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    keys: Annotated[
        list[str],
        typer.Argument(help="Its public key(s) (U...): the current one first, then an old one."),
    ],
    app_modules: Annotated[
        list[str] | None, typer.Option("--app", help="An app the node runs (repeatable).")
    ] = None,
    stream_replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=5,
            help="Servers that keep the node's stream: 1, or 3 on a NATS cluster (the same as "
            "the nodes' --stream-replicas).",
        ),
    ] = 1,
    *,
    connection: Connection,
) -> None:
    """Admit NAME under KEYS: sign its entry, publish it to the map, create its stream."""
    check_name(name)
    for key in keys:
        check_user_key(key, f"the key of {name}")
    if len(set(keys)) != len(keys):
        fail(f"a key of {name} is given twice", 2)
    entry = Admin(connection).admit(name, keys, list(app_modules or []), stream_replicas)
    typer.echo(f"admitted {entry.name} under {', '.join(entry.keys)} (serial {entry.serial})")
    hint(
        "With NATS authorization, update the server: `parley network nats-config --out FILE`, "
        "then `nats-server --signal reload`"
    )


@network_app.command("revoke")
@nats_command
def network_revoke(
    name: Annotated[str, typer.Argument(help="The node to revoke.")],
    *,
    connection: Connection,
) -> None:
    """Revoke NAME: its peers refuse its messages and end their sessions with it."""
    check_name(name)
    entry = Admin(connection).revoke(name)
    typer.echo(f"revoked {entry.name} (serial {entry.serial})")
    hint(
        "With NATS authorization, take its key off the server too: `parley network nats-config "
        "--out FILE`, then `nats-server --signal reload`"
    )


@network_app.command("list")
@nats_command
def network_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of entries.")] = False,
    *,
    connection: Connection,
) -> None:
    """List the network map: every node's entry, admitted or revoked."""
    admin = Admin(connection)
    entries = admin.entries()
    if as_json:
        typer.echo(json.dumps([_as_json(e) for e in entries], indent=2))
        return
    if not entries:
        hint("The network map is empty: admit nodes with `parley network admit NAME KEY`")
        return
    _print_table(entries, admin.operator_public_key)


def _as_json(entry: NodeEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "status": entry.status.value,
        "keys": list(entry.keys),
        "apps": list(entry.apps),
        "flow_versions": [[flow, version] for flow, version in entry.flow_versions],
        "serial": entry.serial,
    }


def _print_table(entries: list[NodeEntry], operator: str) -> None:
    from rich.console import Console  # noqa: PLC0415 (rich is slow to import)
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"Network map of operator {operator}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("keys", overflow="fold")
    table.add_column("apps", overflow="fold")
    table.add_column("serial", justify="right", overflow="fold")
    for entry in entries:
        colour = "green" if entry.admitted else "red"
        table.add_row(
            entry.name,
            f"[{colour}]{entry.status.value}[/{colour}]",
            "\n".join(entry.keys),
            "\n".join(entry.apps),
            str(entry.serial),
        )
    Console(highlight=False).print(table)


@network_app.command("nats-config")
@nats_command
def network_nats_config(
    out: Annotated[
        Path | None, typer.Option(help="Write the fragment to this file (default: stdout).")
    ] = None,
    nodes: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            help="NAME=KEY of a node, instead of reading the map (repeatable; works offline).",
        ),
    ] = None,
    *,
    connection: Connection,
) -> None:
    """Write nats-server's authorization block: the admitted nodes' keys and the admin's."""
    from parley.identity.keys import IdentityError, read_key  # noqa: PLC0415 (PyNaCl)
    from parley.transport.security import (  # noqa: PLC0415 (nats-py)
        NatsSecurityError,
        nats_authorization,
    )

    admin_path = connection.directory / ADMIN_FILE
    if not admin_path.exists():
        fail(_missing(admin_path, "admin", connection.directory))
    try:
        admin_key = read_key(admin_path, kind=_user_kind()).public_key
    except IdentityError as exc:
        fail(str(exc))
    if nodes:
        pairs = [_node_pair(item) for item in nodes]
    else:
        pairs = _admitted_pairs(Admin(connection).entries())
    try:
        fragment = nats_authorization(pairs, admin_key)
    except NatsSecurityError as exc:
        fail(str(exc), 2)
    if out is None:
        typer.echo(fragment, nl=False)
        where = "Save this block in a file next to nats-server's configuration file"
        name = "parley-authorization.conf"
    else:
        try:
            out.write_text(fragment)
        except OSError as exc:
            fail(f"can't write {out}: {exc.strerror}")
        where, name = f"Wrote {out}: put it next to nats-server's configuration file", out.name
    hint(
        f"Authorization for {len(pairs)} node(s) and the admin key {admin_key}.\n"
        f'{where} and add `include "{name}"` to that file, next to its jetstream block '
        "(nats-server reads include paths, even absolute ones, relative to the including "
        "file's directory); then reload the server: `nats-server --signal reload`"
    )


def _node_pair(item: str) -> tuple[str, str]:
    name, sep, key = item.partition("=")
    if not sep:
        fail(f"--node {item!r}: expected NAME=KEY", 2)
    return check_name(name), check_user_key(key, f"--node {name}: the key")


def _admitted_pairs(entries: list[NodeEntry]) -> list[tuple[str, str]]:
    """``(name, key)`` for every key of every admitted node (two during a key rotation)."""
    return [(entry.name, key) for entry in entries if entry.admitted for key in entry.keys]
