"""A NATS cluster of ``nats-server`` child processes on one machine, with JetStream everywhere.

Three servers (by default) are routed to each other on loopback: each is an
:class:`~parley.transport.natsserver.EmbeddedNatsServer` with a name (``n1``, ``n2``, ...), a fixed
route port picked once, and its own store. A stream created with three replicas
(``NodeConfig.stream_replicas = 3``) lives on all three and survives the loss of any one, its
leader included: the other two elect a new leader (JetStream's Raft) and go on.

Rules:

* :meth:`NatsCluster.start` returns once every server answers ``/healthz`` (a JetStream meta
  leader is known and every server is current): only then can R3 streams be created.
* A server is killed (:meth:`~NatsCluster.kill`, ``SIGKILL``) and started again
  (:meth:`~NatsCluster.restart`) on the same ports and store; ``restart`` waits until it is
  healthy again, i.e. it caught up with the streams it replicates.
* :attr:`~NatsCluster.url` is every server's client URL, separated by commas: the form a node's
  ``--nats`` takes.

Used by the tests and the benchmarks; a production network runs its own cluster.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from parley.transport.natsserver import EmbeddedNatsServer, NatsServerError

__all__ = ["NatsCluster"]


def _free_port(host: str) -> int:
    """A TCP port nothing listens on now (the OS's pick; taken by the server moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsCluster:
    """``size`` routed nats-servers with JetStream, their stores under ``base_dir``.

    Use as a context manager to stop every server on exit.

    Args:
        base_dir: each server keeps its store, config and log in ``base_dir/<name>``.
        size: how many servers (3 tolerates the loss of one).
        host: the interface every server listens on.
        name: the cluster's name.
        sync_always: ``sync_interval: always`` on every server.
        max_file_store: each server's JetStream file storage limit.
        max_mem_store: each server's JetStream memory storage limit.

    Raises:
        ValueError: if ``size`` is below 1 or a storage limit is malformed.
    """

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        name: str = "parley",
        sync_always: bool = False,
        max_file_store: str = "1G",
        max_mem_store: str = "256M",
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one server")
        names = [f"n{i + 1}" for i in range(size)]
        route_ports = [_free_port(host) for _ in names]
        routes = [f"nats-route://{host}:{port}" for port in route_ports]
        #: The servers, in the order of :attr:`names`.
        self.servers = [
            EmbeddedNatsServer(
                Path(base_dir) / server,
                host=host,
                sync_always=sync_always,
                max_file_store=max_file_store,
                max_mem_store=max_mem_store,
                server_name=server,
                cluster_name=name,
                cluster_port=port,
                routes=[r for j, r in enumerate(routes) if j != i],
                monitor=True,
            )
            for i, (server, port) in enumerate(zip(names, route_ports, strict=True))
        ]
        #: The servers' names (``n1``, ``n2``, ...): JetStream reports stream leaders by them.
        self.names = names

    # ------------------------------------------------------------------ properties

    @property
    def urls(self) -> list[str]:
        """Every server's client URL, known after :meth:`start`."""
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """Every server's client URL, separated by commas (a node's ``--nats``)."""
        return ",".join(self.urls)

    def index(self, server_name: str) -> int:
        """The position of the server called ``server_name`` (a stream's leader, say).

        Raises:
            KeyError: no server of this cluster has that name.
        """
        try:
            return self.names.index(server_name)
        except ValueError:
            raise KeyError(f"no server {server_name!r} in the cluster {self.names}") from None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> str:
        """Start every server, then wait until each is healthy (JetStream ready).

        Args:
            timeout: bound on the whole start.

        Returns:
            :attr:`url`.

        Raises:
            NatsServerError: a server could not start, or the cluster is not healthy in time
                (every server is stopped then).
        """
        deadline = time.monotonic() + timeout
        try:
            for server in self.servers:
                if not server.running:
                    server.start(max(1.0, deadline - time.monotonic()))
            self.wait_healthy(range(len(self.servers)), deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self.url

    def kill(self, index: int) -> None:
        """``SIGKILL`` server ``index`` (a crash)."""
        self.servers[index].kill()

    def restart(self, index: int, timeout: float = 60.0) -> None:
        """Start server ``index`` again (same ports and store) and wait until it is healthy.

        Raises:
            NatsServerError: it did not start, or did not catch up in time.
        """
        deadline = time.monotonic() + timeout
        server = self.servers[index]
        if not server.running:
            server.start(timeout)
        self.wait_healthy([index], deadline - time.monotonic())

    def wait_healthy(self, indexes: range | list[int], timeout: float) -> None:
        """Wait until the servers at ``indexes`` answer ``/healthz`` with 200.

        Raises:
            NatsServerError: one of them did not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        for index in indexes:
            server = self.servers[index]
            while not server.healthy():
                if not server.running:
                    raise NatsServerError(
                        f"nats-server {self.names[index]} exited; log {server.log_file}:\n"
                        f"{server.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise NatsServerError(
                        f"nats-server {self.names[index]} not healthy after {timeout:.0f} s; "
                        f"log {server.log_file}:\n{server.log_tail()}"
                    )
                pause.wait(0.05)

    def stop(self) -> None:
        """Stop every server (gracefully, then ``SIGKILL``); errors are suppressed."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsCluster({self.names}, urls={[s.port for s in self.servers]})"
