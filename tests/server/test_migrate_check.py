"""``lockgate migrate --check``: what a replica waits on while a migration job runs; it changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lockgate.cli.main import cli
from lockgate.store.database import open_engine, schema_revision


def test_check_fails_until_the_store_is_migrated_and_changes_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", database_url)
    monkeypatch.delenv("LOCKGATE_KEY_PEPPER", raising=False)
    monkeypatch.delenv("LOCKGATE_SIGNING_KEY", raising=False)
    data = tmp_path / "data"
    runner = CliRunner()

    before = runner.invoke(cli, ["migrate", "--check", "--data-dir", str(data)])
    assert before.exit_code == 3
    assert "run `lockgate migrate` first" in before.output
    engine = open_engine(database_url)
    assert schema_revision(engine) is None  # nothing was created
    assert not (data / "key-pepper").exists() and not (data / "signing-key").exists()

    assert runner.invoke(cli, ["migrate", "--data-dir", str(data)]).exit_code == 0
    after = runner.invoke(cli, ["migrate", "--check", "--data-dir", str(data)])
    assert after.exit_code == 0, after.output
    assert "is current" in after.output
    engine.dispose()


def test_check_fails_when_the_store_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    result = CliRunner().invoke(cli, ["migrate", "--check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "not reachable" in result.output
