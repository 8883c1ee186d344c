"""Commands that talk to Kafka say in one line that there is none, instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.cli import main


@pytest.mark.parametrize(
    "command",
    [["topology", "list"], ["run", "order-import", "--user", "shop"], ["topology", "show", "order-sync"]],
)
def test_no_kafka_is_one_clear_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no var/worker.json of a local `up`
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    monkeypatch.setattr("sys.argv", ["shoptet-worker", *command])

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: no Kafka to talk to" in err
    assert "Traceback" not in err


def test_up_with_its_http_port_taken_says_so_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn found the port taken only after the worker had started, and exited the process past
    the graceful stop, leaving a stale var/worker.json that later commands tried to use."""
    import socket

    from typer.testing import CliRunner

    from worker.cli import app

    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"}
        result = CliRunner().invoke(app, ["up"], env=env)

    assert result.exit_code == 2, result.output
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.output
    assert not (tmp_path / "var" / "worker.json").exists()


def exit_of(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[object, str]:
    """Run the CLI as its console script would, in ``tmp_path`` with no Kafka: (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)  # no var/worker.json of a local `up`
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.argv", ["shoptet-worker", *command])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


def test_up_with_a_bad_topology_file_says_its_line_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed a 125-line traceback with the file and line somewhere inside."""
    topologies = tmp_path / "topology"
    topologies.mkdir()
    (topologies / "bad.yaml").write_text("name: x\nstart: [{manual: true}]\nnodes:\n  a: {node: nope}\n")
    code, err = exit_of(["up", "--no-http"], tmp_path, monkeypatch, capsys, TOPOLOGY_DIR=str(topologies))
    assert code == 2
    assert f"error: {topologies / 'bad.yaml'}:4: unknown node type 'nope'" in err
    assert "Traceback" not in err


def test_the_standalone_ingress_without_kafka_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = exit_of(["ingress"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "error: the standalone ingress needs KAFKA_BOOTSTRAP_SERVERS" in err


def test_up_with_a_typo_in_nodes_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed a traceback."""
    env = {"NODES": "shoptet-get-order-detial", "TOPOLOGY_DIR": str(tmp_path)}
    code, err = exit_of(["up", "--no-http"], tmp_path, monkeypatch, capsys, **env)
    assert code == 2
    assert "error: NODES names unknown node type(s): shoptet-get-order-detial" in err
    assert "Traceback" not in err


def test_an_unreachable_kafka_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr("sys.argv", ["shoptet-worker", "topology", "list"])

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "\nerror: cannot reach Kafka" in f"\n{err}" and "Traceback" not in err


def test_the_state_file_of_a_killed_up_is_named_not_dialled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `up` was killed (SIGKILL: no clean-up), every command dialled its dead broker."""
    import json
    import os
    import subprocess

    from worker import control
    from worker.control import NoKafka, resolve_bootstrap
    from worker.settings import Settings

    dead = subprocess.Popen(["true"])
    dead.wait()
    state = tmp_path / "worker.json"
    monkeypatch.setattr(control, "STATE_FILE", state)
    settings = Settings(kafka_bootstrap_servers="")
    state.write_text(json.dumps({"pid": dead.pid, "embedded": True, "bootstrap_servers": "127.0.0.1:9"}))
    with pytest.raises(NoKafka, match=f"pid {dead.pid}\\) that is no longer running"):
        resolve_bootstrap(settings)
    state.write_text(json.dumps({"pid": os.getpid(), "bootstrap_servers": "127.0.0.1:9"}))
    assert resolve_bootstrap(settings) == "127.0.0.1:9"
    # an `up` on an external cluster: the cluster outlives it
    state.write_text(json.dumps({"pid": dead.pid, "embedded": False, "bootstrap_servers": "kafka:9092"}))
    assert resolve_bootstrap(settings) == "kafka:9092"


def test_an_embedded_broker_that_fails_says_what_it_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It exited with a code and nothing else: its output went nowhere."""
    from worker.broker import BrokerStartFailed, EmbeddedBroker

    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'cannot bind 0.0.0.0:9092: address in use' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    with pytest.raises(BrokerStartFailed, match=r"exited with code 3; it said: cannot bind 0\.0\.0\.0:9092"):
        EmbeddedBroker().start(timeout=10)


@pytest.mark.parametrize(
    ("database_url", "said"),
    [
        (
            "postgresql://postgres:pw@127.0.0.1:9/test",
            "cannot open the install store postgresql+asyncpg://postgres:***@",
        ),
        ("mysql://x", "error: DATABASE_URL: unsupported scheme 'mysql'"),
        ("sqlite:////proc/no-such-dir/store.db", "cannot open the install store /proc/no-such-dir/store.db"),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_clear_line(
    database_url: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that refused or was not there printed a driver traceback of 500-700 lines."""
    code, err = exit_of(["trash", "list"], tmp_path, monkeypatch, capsys, DATABASE_URL=database_url)
    assert code == 2
    assert said in err and "Traceback" not in err and "pw@" not in err


def test_the_standalone_ingress_with_its_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    """It logged "ingress serving", then uvicorn exited the process with code 3."""
    import socket

    from typer.testing import CliRunner

    from worker.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
        result = CliRunner().invoke(app, ["ingress"], env=env)

    assert result.exit_code == 2, result.output
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.output


def _install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.ExceptionInfo[SystemExit]:
    """Run ``shoptet-worker install ARGS`` as the console script does, on a SQLite store of its own."""
    from worker.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    monkeypatch.setattr("sys.argv", ["shoptet-worker", "install", *args])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        get_settings.cache_clear()
    return exited


def test_an_invalid_setting_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.settings import Settings

    monkeypatch.setenv("LOG_LEVEL", "verbose")
    exited = _install_command(tmp_path, monkeypatch, "list")

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid setting: LOG_LEVEL: Input should be 'DEBUG'")
    assert "Traceback" not in err

    # `--help` reads no settings: it still works
    monkeypatch.setattr("sys.argv", ["shoptet-worker", "install", "list", "--help"])
    with pytest.raises(SystemExit) as helped:
        main()
    assert helped.value.code == 0
    # the standard library's other names still work, as they did
    monkeypatch.setenv("LOG_LEVEL", "warn")
    assert Settings().log_level == "WARNING"


def test_every_command_logs_to_stderr_as_log_format_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`install list --json | jq` got console log lines (the store's migration, a secret it could
    not decrypt) on stdout: the install commands never set logging up."""
    import json

    monkeypatch.setenv("LOG_FORMAT", "json")
    exited = _install_command(tmp_path, monkeypatch, "list", "--json")

    assert exited.value.code == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # no installs: nothing but JSON lines would belong here
    logged = [json.loads(line) for line in captured.err.splitlines()]
    assert any(entry["event"] == "install store migrated" for entry in logged)


def test_a_store_that_stops_answering_is_one_line_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database restart during `install add` printed a whole traceback (with typer 0.12, the
    frames' variables too: the OAuth token, three times)."""
    from worker.errors import StoreUnavailable
    from worker.store.sql import SqlInstallStore

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("the install store did not answer: connection reset")

    monkeypatch.setattr(SqlInstallStore, "add_install", unavailable)
    command = ["install", "add", "addon", "--user", "shop", "--eshop-id", "1", "--oauth-token", "SECRET-OAUTH-TOKEN"]
    code, err = exit_of([*command, "--no-start"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: the install store did not answer: connection reset"
    assert "Traceback" not in err and "SECRET-OAUTH-TOKEN" not in err
