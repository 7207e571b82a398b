"""Helpers for integration tests: node processes, waiting with deadlines, reading a node's DB."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.02)


def rows(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Read a node's SQLite file (read-only, while the node may be running)."""
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # the table is not created yet
    finally:
        connection.close()


class NodeProcess:
    """``parley node run`` in a child process."""

    def __init__(
        self,
        name: str,
        nats_url: str,
        data_dir: Path,
        apps: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name, self.nats_url, self.data_dir = name, nats_url, data_dir
        self.apps, self.env = list(apps), env or {}
        #: More ``parley node run`` options (``["--operator-key", KEY]``).
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    @property
    def db(self) -> Path:
        return self.data_dir / "parley.sqlite"

    def start(self, timeout: float = 30.0) -> NodeProcess:
        command = [
            sys.executable,
            "-m",
            "parley.cli",
            "node",
            "run",
            "--name",
            self.name,
            "--nats",
            self.nats_url,
            "--data-dir",
            str(self.data_dir),
            "--workers",
            "2",
        ]
        for app in self.apps:
            command += ["--app", app]
        command += self.extra_args
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        log: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"node {self.name} did not start:\n{''.join(log)}") from None
            log.append(line)
            if f"node {self.name} running" in line:
                return self
            if self.proc.poll() is not None and self._lines.empty():
                raise AssertionError(f"node {self.name} exited:\n{''.join(log)}")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._lines.put(line)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        """SIGTERM: a graceful stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self._reader.join(10)
            self.proc.stderr.close()


@contextmanager
def node_process(
    name: str,
    nats_url: str,
    data_dir: Path,
    apps: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
) -> Iterator[NodeProcess]:
    process = NodeProcess(name, nats_url, data_dir, apps, env, extra_args=extra_args).start()
    try:
        yield process
    finally:
        process.stop()


def run_flow_process(
    *,
    name: str,
    nats_url: str,
    data_dir: Path,
    flow: str,
    args: str,
    client_id: str,
    timeout: float = 90.0,
    signals: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``tests.integration.noderunner`` (a node that starts one flow) to completion or death.

    ``extra_args`` are more noderunner options (``["--operator-key", KEY]``).
    """
    command = _runner_command(
        name=name,
        nats_url=nats_url,
        data_dir=data_dir,
        flow=flow,
        args=args,
        client_id=client_id,
        signals=signals,
        extra_args=extra_args,
    )
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def start_flow_process(
    *,
    name: str,
    nats_url: str,
    data_dir: Path,
    flow: str,
    args: str,
    client_id: str,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start ``tests.integration.noderunner`` without waiting for it (``communicate()`` does)."""
    command = _runner_command(
        name=name,
        nats_url=nats_url,
        data_dir=data_dir,
        flow=flow,
        args=args,
        client_id=client_id,
        signals=(),
        extra_args=extra_args,
    )
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _runner_command(
    *,
    name: str,
    nats_url: str,
    data_dir: Path,
    flow: str,
    args: str,
    client_id: str,
    signals: Sequence[str],
    extra_args: Sequence[str],
) -> list[str]:
    command = [sys.executable, "-m", "tests.integration.noderunner", "--name", name]
    command += ["--nats", nats_url, "--data-dir", str(data_dir), "--flow", flow, "--args", args]
    command += ["--client-id", client_id]
    for named in signals:
        command += ["--signal", named]
    return command + list(extra_args)
