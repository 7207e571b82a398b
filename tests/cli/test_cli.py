"""The command line: help, configuration files and bad arguments (each a clear error)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from parley.cli import app
from parley.cli.main import load_config

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "node" in result.output
    assert "network" in result.output
    assert "version" in result.output


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip().count(".") >= 1


def test_node_run_without_a_name_is_refused() -> None:
    result = runner.invoke(app, ["node", "run"])
    assert result.exit_code == 2
    assert "needs a name" in result.output


def test_node_run_with_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["node", "run", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "no such config file" in result.output


def test_a_config_file_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[node]\nname = "alice"\ncolour = "blue"\n')
    with pytest.raises(typer.BadParameter, match=r"unknown keys in \[node\].*colour"):
        load_config(config)


def test_a_config_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text("[node\nname=")
    result = runner.invoke(app, ["node", "run", "--config", str(config)])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output


def test_a_config_file_supplies_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[node]\nname = "alice"\nworkers = 2\napps = ["parley.apps.pingpong"]\n')
    assert load_config(config) == {
        "name": "alice",
        "workers": 2,
        "apps": ["parley.apps.pingpong"],
    }


def test_an_out_of_range_option_is_refused() -> None:
    result = runner.invoke(app, ["node", "run", "--name", "a", "--workers", "0"])
    assert result.exit_code == 2
    assert "workers" in result.output


def test_an_app_that_does_not_exist_stops_the_node_with_a_clear_error(tmp_path: Path) -> None:
    args = ["node", "run", "--name", "alice", "--data-dir", str(tmp_path / "alice")]
    args += ["--nats", "nats://127.0.0.1:1", "--app", "no_such_module_here"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "app 'no_such_module_here' can't be imported" in result.output
    assert "--app-path" in result.output
    assert "PYTHONPATH" in result.output


def test_an_app_outside_the_installed_packages_is_found_through_app_path(tmp_path: Path) -> None:
    package = tmp_path / "src" / "myapp_for_cli_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "trade.py").write_text("from parley import FlowLogic\n")
    args = ["node", "run", "--name", "alice", "--data-dir", str(tmp_path / "alice")]
    args += ["--nats", "nats://127.0.0.1:1", "--app", "myapp_for_cli_test.trade"]
    args += ["--app-path", str(tmp_path / "src"), "--passivate-after", "5"]
    result = runner.invoke(app, args)
    assert "can't be imported" not in result.output
    assert result.exit_code == 1  # the app loaded; the node then found no NATS server
    assert "failed to start" in result.output


def test_a_node_that_cannot_reach_nats_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    args = ["node", "run", "--name", "alice", "--data-dir", str(tmp_path / "alice")]
    result = runner.invoke(app, args, env={"PARLEY_NATS_URL": "nats://127.0.0.1:1"})
    assert result.exit_code == 1
    assert "failed to start" in result.output
    assert "no NATS server at nats://127.0.0.1:1" in result.output
    # Without --operator-key the node says that its messages are not authenticated.
    assert "WARNING parley.node" in result.output
    assert "runs without a network map" in result.output


def test_a_config_file_takes_the_network_settings(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        '[node]\nname = "alice"\noperator_key = "network/operator.pub"\nmap_wait = 2.5\n'
        'nats_nkey = true\nnats_tls_ca = "ca.pem"\nnats_tls_cert = "alice.pem"\n'
        'nats_tls_key = "alice-key.pem"\n'
    )
    assert load_config(config) == {
        "name": "alice",
        "operator_key": "network/operator.pub",
        "map_wait": 2.5,
        "nats_nkey": True,
        "nats_tls_ca": "ca.pem",
        "nats_tls_cert": "alice.pem",
        "nats_tls_key": "alice-key.pem",
    }


def test_network_settings_of_the_wrong_kind_are_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    seed = tmp_path / "operator.nk"
    seed.write_text("SOAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")
    cases = [
        ('nats_nkey = "yes"', "nats_nkey must be true or false, not 'yes'"),
        (f'operator_key = "{seed}"', "holds a secret seed"),
        ('nats = "nats://127.0.0.1:1"\noperator_key = "OAB"', "neither the operator's public key"),
        ('nats_tls_ca = "ca.pem"', "--nats-tls-* need --nats"),
    ]
    for line, message in cases:
        config.write_text(f'[node]\nname = "alice"\n{line}\n')
        result = runner.invoke(app, ["node", "run", "--config", str(config)])
        assert result.exit_code == 2, result.output
        [only_line] = result.output.strip().splitlines()
        assert only_line.startswith("error: ")
        assert message in only_line


def test_a_map_wait_below_zero_is_refused() -> None:
    result = runner.invoke(app, ["node", "run", "--name", "a", "--map-wait", "-1"])
    assert result.exit_code == 2
    assert "map-wait" in result.output
