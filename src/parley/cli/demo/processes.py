"""The processes ``parley demo`` starts, nats-server and the nodes, and their stopping by PID.

Each child runs in a session of its own (a Ctrl-C at the terminal reaches the demo, which
stops them) with the caller's environment less ``PARLEY_*``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from parley.cli.demo.settings import POLL, START_WAIT, STOP_GRACE, DemoError


class Children:
    """The processes the demo started: nats-server and the nodes, stopped by PID."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: ``parley nats serve``, which runs nats-server.
        self.nats: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        #: nats-server's own PID (``parley nats serve`` runs it).
        self.server_pid: int | None = None
        #: Every process started (a restarted node is two).
        self.started: list[subprocess.Popen[bytes]] = []

    def start_nats(self) -> str:
        """``parley nats serve`` in a session of its own (a Ctrl-C at the terminal must not stop
        the server before the nodes); returns its URL, the first line it prints."""
        store = self.directory / "nats"
        store.mkdir()
        command = [sys.executable, "-m", "parley.cli", "nats", "serve", "--port", "0"]
        command += ["--store-dir", str(store)]
        with (store / "serve.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=self.directory,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.nats = proc
        self.started.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + START_WAIT
        url = ""
        while not url and proc.poll() is None and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], POLL * 10)[0]:
                url = proc.stdout.readline().decode().strip()
        if not url.startswith("nats://"):
            serve_log = store / "serve.log"
            raise DemoError(
                f"nats-server did not start; the end of {serve_log}:\n{tail(serve_log)}"
            )
        for ports in (store / "ports").glob("nats-server_*.ports"):  # written by the server
            with contextlib.suppress(ValueError):
                self.server_pid = int(ports.stem.rpartition("_")[2])
        return url

    def start_node(self, name: str) -> subprocess.Popen[bytes]:
        """``parley node run --config <name>/parley.toml``, logging to ``<name>/node.log``."""
        home = self.directory / name
        command = [sys.executable, "-m", "parley.cli", "node", "run"]
        command += ["--config", str(home / "parley.toml")]
        with (home / "node.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=home,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes[name] = proc
        self.started.append(proc)
        return proc

    def kill(self, name: str) -> int:
        """SIGKILL the node's process (a crash); returns its PID."""
        proc = self.nodes[name]
        proc.kill()
        proc.wait()
        return proc.pid

    def stop_all(self) -> tuple[list[str], list[int]]:
        """Stop every process still running: the nodes (SIGTERM, then SIGKILL after
        :data:`STOP_GRACE`), then nats-server. Returns what was stopped, and the PIDs of the
        demo's processes still alive (none, unless something refused to die)."""
        stopped = []
        running = {n: p for n, p in self.nodes.items() if p.poll() is None}
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for name, proc in running.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stopped.append(f"{name} (pid {proc.pid})")
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGTERM)  # it stops its nats-server, then itself
            try:
                self.nats.wait(STOP_GRACE * 2)
            except subprocess.TimeoutExpired:  # the server with it: it is in their group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.nats.pid, signal.SIGKILL)
                self.nats.wait()
            stopped.append(f"nats-server (pid {self.server_pid or self.nats.pid})")
        if self.nats is not None and self.nats.stdout is not None:
            self.nats.stdout.close()
        server = self.server_pid
        if server is not None and _alive(server) and self._ours(server):
            os.kill(server, signal.SIGKILL)  # its `parley nats serve` died without stopping it
        pids = [proc.pid for proc in self.started if proc.poll() is None]
        if server is not None and _alive(server):
            pids.append(server)
        return stopped, pids

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` is still the nats-server of this demo (not a PID used again)."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.directory / "nats").encode() in command


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def tail(log: Path, lines: int = 15) -> str:
    """The end of a log file."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _environment() -> dict[str, str]:
    """The children's environment: the caller's without ``PARLEY_*`` (a ``PARLEY_NATS_URL``
    would win over the nodes' configuration)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
