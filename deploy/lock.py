"""Regenerate the image's hash-pinned requirement files from constraints.txt.

    python deploy/lock.py           # rewrite deploy/requirements.txt and deploy/requirements-build.txt
    python deploy/lock.py --check   # exit 1 when either file differs from what would be written

Run it with the project's Python 3.11 on Linux (``make deploy-requirements`` does), after any change to
constraints.txt, pyproject.toml or deploy/requirements-build.in; it needs PyPI.

- deploy/requirements.txt: what ``pip install -c constraints.txt '.[local]'`` installs, resolved by pip
  itself (``--dry-run --report``) with this machine's pip configuration ignored, lockgate excluded (the
  image installs it from its own source).
- deploy/requirements-build.txt: deploy/requirements-build.in (pip, and the build backends of lockgate and
  llama-cpp-python) under the same constraints. The image installs these first and then builds with
  ``--no-build-isolation``, so no build dependency escapes the hash check either.

Every pin lists the sha256 of each file PyPI has for that version that the image could install: the
sdist and the wheels for CPython 3.11 on glibc Linux (x86_64 and aarch64) up to the base image's glibc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INDEX = "https://pypi.org/simple"
GLIBC = (2, 36)  # Debian bookworm, the base image's distribution
ARCHES = ("x86_64", "aarch64")


def platforms() -> list[str]:
    names: list[str] = []
    for arch in ARCHES:
        names += [f"manylinux_{GLIBC[0]}_{minor}_{arch}" for minor in range(GLIBC[1], 4, -1)]
        names += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return names


SUPPORTED: frozenset[Tag] = frozenset(
    [
        *cpython_tags((3, 11), abis=["cp311"], platforms=platforms()),
        *compatible_tags((3, 11), interpreter="cp311", platforms=platforms()),
    ]
)


def installable(filename: str, name: str, version: Version) -> bool:
    """Whether ``filename`` is a distribution of ``name==version`` that the image could install."""
    try:
        wheel_name, wheel_version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        pass
    else:
        return wheel_name == name and wheel_version == version and not tags.isdisjoint(SUPPORTED)
    try:
        sdist_name, sdist_version = parse_sdist_filename(filename)
    except InvalidSdistFilename:
        return False
    return sdist_name == name and sdist_version == version


def resolve(arguments: list[str]) -> dict[str, Version]:
    """name -> version of everything pip would install for ``arguments``, lockgate itself excluded."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    environment["PIP_CONFIG_FILE"] = os.devnull  # no machine- or user-wide index, constraint or cache
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed"]
        command += ["--quiet", "--report", str(report), "--index-url", INDEX]
        command += ["-c", str(ROOT / "constraints.txt"), *arguments]
        subprocess.run(command, check=True, cwd=ROOT, env=environment)  # noqa: S603 (our own pip)
        installs = json.loads(report.read_text())["install"]
    return {
        canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
        for item in installs
        if canonicalize_name(item["metadata"]["name"]) != "lockgate"
    }


def hashes(name: str, version: Version) -> list[str]:
    url = f"{INDEX}/{name}/"  # PyPI's simple index, JSON form: every file of the project with its digests
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        files = json.load(answer)["files"]
    found = sorted(
        {
            f["hashes"]["sha256"]
            for f in files
            if installable(f["filename"], name, version) and not f.get("yanked")
        }
    )
    if not found:
        raise SystemExit(f"PyPI lists no installable file of {name}=={version}")
    return found


def render(pins: dict[str, Version], header: str) -> str:
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    for name in sorted(pins):
        lines.append(f"{name}=={pins[name]} \\")
        digests = hashes(name, pins[name])
        lines += [f"    --hash=sha256:{d} \\" for d in digests[:-1]]
        lines.append(f"    --hash=sha256:{digests[-1]}")
    return "\n".join(lines) + "\n"


RUNTIME_HEADER = """
The image's runtime packages: lockgate[local] under constraints.txt, each with the sha256 of every file
the image may install. Generated by deploy/lock.py (make deploy-requirements): do not edit by hand.
"""

BUILD_HEADER = """
The image's build tools (deploy/requirements-build.in under constraints.txt), installed before
requirements.txt, which is then built with --no-build-isolation. Generated by deploy/lock.py
(make deploy-requirements): do not edit by hand.
"""


def expected() -> dict[Path, str]:
    if sys.version_info[:2] != (3, 11) or not sys.platform.startswith("linux"):
        raise SystemExit("run deploy/lock.py with Python 3.11 on Linux, as the image has")
    runtime = resolve([".[local]"])
    build = resolve(["-r", str(DEPLOY / "requirements-build.in")])
    return {
        DEPLOY / "requirements.txt": render(runtime, RUNTIME_HEADER),
        DEPLOY / "requirements-build.txt": render(build, BUILD_HEADER),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a file is not what it would be")
    args = parser.parse_args()
    stale: list[str] = []
    for path, text in expected().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        raise SystemExit(f"out of date: {', '.join(stale)} (run deploy/lock.py)")


if __name__ == "__main__":
    main()
