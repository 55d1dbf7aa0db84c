"""deploy/new-secrets.sh: fresh secrets for a new installation, in the form each deployment reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lockgate.security.signing import load_signer, verify_signature
from tests.deploy.support import DEPLOY, env_file


def generate(kind: str, tmp_path: Path) -> dict[str, str]:
    result = subprocess.run(
        ["sh", str(DEPLOY / "new-secrets.sh"), kind], capture_output=True, text=True, check=True
    )
    path = tmp_path / f"{kind}.env"
    path.write_text(result.stdout)
    return env_file(path)


@pytest.mark.parametrize(
    ("kind", "example"),
    [
        ("compose", DEPLOY / "compose" / ".env.example"),
        ("kubernetes", DEPLOY / "k8s" / "secrets.env.example"),
    ],
)
def test_each_kind_gets_every_variable_its_deployment_needs_fresh(
    kind: str, example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = generate(kind, tmp_path), generate(kind, tmp_path)
    assert set(first) == set(env_file(example))
    generated = {k for k, v in first.items() if "replace-me" not in v}
    assert generated >= {"LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY", "LOCKGATE_METRICS_TOKEN"}
    for variable in generated:
        assert first[variable] != second[variable]  # random, never a fixed default
        assert len(first[variable]) >= 32
    # The server takes the signing key as it is: an Ed25519 key that signs and verifies.
    monkeypatch.setenv("LOCKGATE_SIGNING_KEY", first["LOCKGATE_SIGNING_KEY"])
    signer = load_signer(tmp_path / "unused")
    assert verify_signature(signer.public_key, b"head", signer.sign(b"head"))


def test_an_unknown_kind_is_refused() -> None:
    result = subprocess.run(
        ["sh", str(DEPLOY / "new-secrets.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "usage" in result.stderr and result.stdout == ""
