"""The server-side pepper mixed into every API-key hash.

A stolen database alone cannot be used to test guessed keys offline. The pepper comes from
``LOCKGATE_KEY_PEPPER`` (share it between hosts that share a database) or, on a single machine, from a
file created in the data directory on first start with owner-only permissions.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lockgate.service_errors import Invalid

ENV = "LOCKGATE_KEY_PEPPER"


def load_pepper(data: Path, *, create: bool = False) -> bytes:
    """The pepper; ``create`` makes the file on first install (``lockgate migrate``), never later."""
    from_env = os.environ.get(ENV)
    if from_env:
        return from_env.encode("utf-8")
    path = data / "key-pepper"
    if not create:
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            raise Invalid(
                f"no key pepper: set {ENV} or run `lockgate migrate` with this data directory"
            ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    value = secrets.token_hex(32).encode("ascii")
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return value
