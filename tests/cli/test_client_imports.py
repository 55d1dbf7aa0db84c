"""The CLI is a client: running any command that only talks to the server loads none of the server.

No store, no service layer, no web framework in the client's process: it could not open the store if it
wanted to, and it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from lockgate.cli.main import COMMANDS

SERVER_ONLY = (
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "pydantic",
    "jinja2",
    "lockgate.store",
    "lockgate.services",
)
LOCAL_OR_SERVER = {"serve", "migrate", "recover-admin", "config"}  # these load the server's code by design


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - LOCAL_OR_SERVER))
def test_a_client_command_loads_nothing_of_the_server(name: str) -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lockgate.cli.main import cli\n"
        f"CliRunner().invoke(cli, [{name!r}, '--help'])\n"
        f"server = {SERVER_ONLY!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in server or m.startswith(server))\n"
        "print('\\n'.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == []
