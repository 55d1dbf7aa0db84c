"""The ``lockgate`` CLI as a user runs it: a client of a running server, holding only a URL and a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner, Result

from lockgate.cli.main import cli


class Cli:
    """Runs ``lockgate ...`` with ``LOCKGATE_URL`` and ``LOCKGATE_TOKEN`` set and nothing else: no data
    directory, no database URL, no pepper, no signing key. Profiles go to a private config directory."""

    def __init__(self, url: str, token: str | None, home: Path) -> None:
        self.url = url
        self.token = token
        self.home = home
        self.runner = CliRunner()

    def as_(self, token: str | None) -> Cli:
        """The same CLI acting with another token (another person)."""
        return Cli(self.url, token, self.home)

    def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        environment: dict[str, str | None] = {
            "LOCKGATE_URL": self.url,
            "LOCKGATE_TOKEN": self.token,
            "LOCKGATE_PROFILE": None,
            "LOCKGATE_TENANT": None,
            "LOCKGATE_DATA_DIR": None,
            "LOCKGATE_DATABASE_URL": None,
            "LOCKGATE_KEY_PEPPER": None,
            "LOCKGATE_SIGNING_KEY": None,
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            **env,
        }
        return self.runner.invoke(cli, list(args), env=environment, input=input)

    def ok(self, *args: str, **env: str | None) -> Result:
        result = self(*args, **env)
        assert result.exit_code == 0, f"lockgate {' '.join(args)} exited {result.exit_code}:\n{result.output}"
        return result

    def fails(self, *args: str, code: int = 1, **env: str | None) -> Result:
        result = self(*args, **env)
        assert result.exit_code == code, (
            f"lockgate {' '.join(args)} exited {result.exit_code}:\n{result.output}"
        )
        return result

    def json(self, *args: str) -> Any:
        return orjson.loads(self.ok(*args, "--json").stdout)
