"""The image installs exactly what ``make install`` installs: every pin of deploy/requirements*.txt
carries sha256 hashes and the version constraints.txt pins, and the runtime file holds the whole
dependency closure of ``lockgate[local]``, nothing more, nothing less."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.deploy.support import DEPLOY, ROOT

RUNTIME = DEPLOY / "requirements.txt"
BUILD = DEPLOY / "requirements-build.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def hashed_pins(path: Path) -> dict[NormalizedName, tuple[Version, int]]:
    """name -> (version, number of hashes), read as pip reads a requirements file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[NormalizedName, tuple[Version, int]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split()
        pinned = PIN.match(requirement)
        assert pinned is not None, f"{path.name}: {requirement} is not pinned with =="
        assert options and all(HASH.match(o) for o in options), f"{path.name}: {requirement} lacks hashes"
        name = canonicalize_name(pinned["name"])
        assert name not in pins, f"{path.name}: {name} twice"
        pins[name] = (Version(pinned["version"]), len(options))
    return pins


def constraints() -> dict[NormalizedName, Version]:
    found: dict[NormalizedName, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            found[canonicalize_name(requirement.name)] = Version(spec.version)
    return found


def closure(requirements: list[str]) -> dict[NormalizedName, Version]:
    """Every distribution ``requirements`` need on this platform, as installed from constraints.txt."""
    needed: dict[NormalizedName, Version] = {}
    pending: list[tuple[list[str], set[str]]] = [(requirements, set())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        lines, wanted = pending.pop()
        for line in lines:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in {"", *wanted}):
                continue
            dependency = canonicalize_name(requirement.name)
            needed[dependency] = Version(metadata.version(requirement.name))
            if (key := (dependency, frozenset(requirement.extras))) not in seen:
                seen.add(key)
                pending.append((metadata.requires(requirement.name) or [], set(requirement.extras)))
    return needed


def test_every_pin_has_hashes_and_the_version_constraints_txt_pins() -> None:
    pinned = constraints()
    for path in (RUNTIME, BUILD):
        for name, (version, _) in hashed_pins(path).items():
            if name in pinned:
                assert version == pinned[name], (
                    f"{path.name}: {name}=={version}, constraints.txt: {pinned[name]}"
                )
    missing = sorted(set(hashed_pins(RUNTIME)) - set(pinned))
    assert missing == [], f"runtime packages that constraints.txt does not pin: {missing}"


def test_the_runtime_file_is_the_closure_of_lockgate_local() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["local"]]
    declared = {canonicalize_name(Requirement(r).name) for r in direct}
    try:
        expected = closure(direct)
    except metadata.PackageNotFoundError as missing:
        pytest.fail(f"install lockgate[local] from constraints.txt first (make install): {missing}")
    pins = {name: version for name, (version, _) in hashed_pins(RUNTIME).items()}
    assert declared <= set(pins)
    assert sorted(set(expected) - set(pins)) == [], "needed by lockgate[local], absent from the image"
    assert sorted(set(pins) - set(expected)) == [], "in the image, needed by nothing"
    assert pins == expected  # and at the versions `make install` installed


def test_the_build_file_pins_the_tools_the_project_builds_with() -> None:
    pins = {name: version for name, (version, _) in hashed_pins(BUILD).items()}
    requested = {
        canonicalize_name(Requirement(line.split("#")[0]).name): Requirement(line.split("#")[0])
        for line in (DEPLOY / "requirements-build.in").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    for name, requirement in requested.items():
        assert pins[name] in requirement.specifier, name
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for line in build_system:  # lockgate itself is built with what pyproject.toml names
        requirement = Requirement(line)
        assert pins[canonicalize_name(requirement.name)] in requirement.specifier
    makefile_pip = re.search(r"pip install [^\n]*pip==(\S+)", (ROOT / "Makefile").read_text())
    assert makefile_pip is not None and pins[canonicalize_name("pip")] == Version(makefile_pip.group(1))
    # llama-cpp-python, the one package built from source, builds with the backend pinned here.
    assert "scikit-build-core" in pins


def lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_lock", DEPLOY / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("filename", "installable"),
    [
        ("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
        ("numpy-2.4.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", True),
        ("numpy-2.4.6-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),  # stable ABI
        ("numpy-2.4.6-py3-none-any.whl", True),
        ("numpy-2.4.6.tar.gz", True),
        ("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.whl", False),  # another Python
        ("numpy-2.4.6-cp311-cp311-musllinux_1_2_x86_64.whl", False),  # not glibc
        ("numpy-2.4.6-cp311-cp311-win_amd64.whl", False),
        ("numpy-2.4.6-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # newer glibc than bookworm's
        ("numpy-2.4.5-cp311-cp311-manylinux_2_27_x86_64.whl", False),  # another version
        ("numpy-2.4.5.tar.gz", False),
    ],
)
def test_the_lock_script_hashes_only_files_the_image_could_install(filename: str, installable: bool) -> None:
    lock = lock_module()
    assert lock.installable(filename, canonicalize_name("numpy"), Version("2.4.6")) is installable
