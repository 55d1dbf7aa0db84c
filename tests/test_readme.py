"""The README is the test: its golden path runs, block by block, as a new user would run it.

A real ``lockgate serve`` (after ``lockgate migrate``) on the embedded defaults, on SQLite and on
PostgreSQL; the README's bash blocks run in one shell from an empty directory whose environment holds
nothing but PATH and HOME (the blocks export ``LOCKGATE_URL`` themselves): no data directory, no database
URL, no key pepper, no signing key. The only edits are the two placeholders a user fills in: the
server's address and the admin token the first start printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import LockgateServer

README = (Path(__file__).parents[1] / "README.md").read_text()
TOKEN = re.compile(r"control token of user 'admin' \(shown once\): (lgc-\S+)")
KEY = re.compile(r"admin key \(shown once, store it now\): (lg-\S+)")
SERVER_SECRETS = ("LOCKGATE_DATA_DIR", "LOCKGATE_DATABASE_URL", "LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY")


def section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[LockgateServer]:
    """`make serve`: migrate, then serve the embedded defaults (the local Gemma model)."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    server = LockgateServer(workdir, None, {"LOCKGATE_DATABASE_URL": database_url}).start(timeout=180)
    yield server
    assert server.stop(), server.output()[-3000:]


def client_environment(home: Path) -> dict[str, str]:
    """What a user's shell has: a PATH with lockgate installed, a HOME. Nothing of the server's."""
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


@pytest.mark.slow
def test_the_readme_golden_path_runs_with_only_a_url_and_tokens(
    served: LockgateServer, tmp_path: Path
) -> None:
    output = served.output()
    token = TOKEN.search(output)
    assert token is not None, output
    script = "\n".join(blocks(section("The golden path: from a prompt to production"), "bash"))
    assert "lgc-..." in script and "http://127.0.0.1:4000" in script
    script = script.replace("http://127.0.0.1:4000", served.url).replace("lgc-...", token[1])
    script += '\necho "RELEASES $REL $REL2"\n'
    workdir, home = tmp_path / "user", tmp_path / "home"
    workdir.mkdir()
    home.mkdir()
    environment = client_environment(home)
    assert not set(SERVER_SECRETS) & set(environment)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    shown = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, shown
    first, second = re.findall(r"^RELEASES (rel_\w+) (rel_\w+)$", done.stdout, re.MULTILINE)[0]
    assert first != second
    out = done.stdout
    assert f"x-lockgate-release: {first}" in out.lower(), shown  # the dev key's route call
    assert f"ALLOW: release {first} -> stage" in out, shown
    assert "ok: every check passed" in out, shown
    assert re.search(rf"^support-answer\s+prod\s+{first}\s", out, re.MULTILINE), shown  # rolled back
    assert re.search(r"^ok: \d+ entries, head at seq \d+", out, re.MULTILINE), shown  # audit verify
    # The client side never held the server's state or secrets.
    assert not (workdir / ".lockgate").exists()
    names = {p.name for p in [*workdir.rglob("*"), *home.rglob("*")]}
    assert not names & {"lockgate.db", "key-pepper", "signing-key", "audit-anchor.json"}
    profiles = home / ".config" / "lockgate" / "profiles.json"
    assert profiles.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_the_readme_sdk_example_answers(served: LockgateServer) -> None:
    key = KEY.search(served.output())
    assert key is not None
    (example,) = blocks(README.split("\n## ", 1)[0], "python")
    example = example.replace("http://127.0.0.1:4000", served.url).replace("lg-1a2b3c4d-...", key[1])
    done = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the model answered nothing"
