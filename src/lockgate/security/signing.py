"""The instance's Ed25519 signing key, used to sign the audit chain head (and later, evidence).

It comes from ``LOCKGATE_SIGNING_KEY`` (base64 of the 32-byte private key; share it between hosts that
share a database) or, on a single machine, from a file created in the data directory on first use with
owner-only permissions.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from lockgate.service_errors import Invalid

ENV = "LOCKGATE_SIGNING_KEY"


@dataclass(frozen=True, slots=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode("ascii")


def verify_signature(public_key: str, message: bytes, signature: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
            base64.b64decode(signature), message
        )
    except Exception:
        return False
    return True


def load_signer(data: Path, *, create: bool = False) -> Signer:
    """The signing key; ``create`` makes it on first install (``lockgate migrate``), never later, so a
    lost key can never be silently replaced by a new one that the existing chain does not verify with."""
    from_env = os.environ.get(ENV)
    if from_env:
        return Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(from_env)))
    path = data / "signing-key"
    if not create:
        try:
            return Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes().strip())))
        except FileNotFoundError:
            raise Invalid(
                f"no signing key: set {ENV} or run `lockgate migrate` with this data directory"
            ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes().strip())))
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(raw))
    return Signer(key)
