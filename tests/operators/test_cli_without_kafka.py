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
