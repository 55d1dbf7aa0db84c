"""The CLI's connection to a lockgate server: where it is, the token to send, and the HTTP calls.

A command finds its server and token, first match wins: ``--url``/``--token``, then ``LOCKGATE_URL`` /
``LOCKGATE_TOKEN``, then the profile named by ``--profile``/``LOCKGATE_PROFILE``, then the current
profile saved by ``lockgate login``. Profiles live in ``$XDG_CONFIG_HOME/lockgate/profiles.json``
(``~/.config/...``), written owner-only (0600), like ``gh auth login`` or kube contexts.

This module imports only the standard library and orjson, so a command that only talks to the server
starts fast; it never opens a store and never needs the server's secrets.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

TIMEOUT = 120.0


class ClientError(Exception):
    """The server refused (or could not be reached); ``message`` is what to show the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lockgate"


def profiles_path() -> Path:
    return config_dir() / "profiles.json"


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    token: str


def load_profiles() -> tuple[str | None, dict[str, Profile]]:
    """(current profile name, profiles)."""
    try:
        raw = orjson.loads(profiles_path().read_bytes())
    except FileNotFoundError:
        return None, {}
    except orjson.JSONDecodeError:
        raise ClientError(0, f"{profiles_path()} is not valid JSON; fix or delete it") from None
    found = {
        name: Profile(str(entry["url"]), str(entry["token"]))
        for name, entry in (raw.get("profiles") or {}).items()
        if isinstance(entry, dict) and "url" in entry and "token" in entry
    }
    current = raw.get("current")
    return (str(current) if current else None), found


def save_profile(name: str, profile: Profile, *, make_current: bool = True) -> Path:
    """Add or replace a profile; the file is written owner-only, atomically."""
    current, found = load_profiles()
    found[name] = profile
    document = {
        "current": name if make_current or current is None else current,
        "profiles": {key: {"url": p.url, "token": p.token} for key, p in sorted(found.items())},
    }
    _write_private(profiles_path(), orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return profiles_path()


def forget_profile(name: str) -> bool:
    current, found = load_profiles()
    if name not in found:
        return False
    del found[name]
    document = {
        "current": current if current in found else next(iter(sorted(found)), None),
        "profiles": {key: {"url": p.url, "token": p.token} for key, p in sorted(found.items())},
    }
    _write_private(profiles_path(), orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return True


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def resolve(url: str | None, token: str | None, profile: str | None) -> Client:
    """The server and token a command uses (see the module docstring for the order)."""
    current, found = load_profiles()
    chosen = profile or current
    saved = found.get(chosen) if chosen else None
    if profile and saved is None:
        raise ClientError(0, f"no profile {profile!r}; saved profiles: {', '.join(sorted(found)) or 'none'}")
    url = url or (saved.url if saved else None)
    token = token or (saved.token if saved else None)
    if not url:
        raise ClientError(
            0, "no server: set LOCKGATE_URL (e.g. http://127.0.0.1:4000) or run `lockgate login --url URL`"
        )
    return Client(url, token)


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ClientError(0, f"the server URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        raw: bool = False,
        bearer: str | None = None,
    ) -> Any:
        """Call ``/api/v1`` + ``path``; the JSON answer (or bytes with ``raw``), or ``ClientError``."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        target = f"{self.url}/api/v1{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"accept": "application/json"}
        credential = bearer or self.token
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["content-type"] = "application/json"
        request = urllib.request.Request(target, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - http(s) only
                payload: bytes = response.read()
        except urllib.error.HTTPError as exc:
            raise ClientError(exc.code, _message(exc.code, exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(0, f"cannot reach lockgate at {self.url}: {reason}") from None
        if raw:
            return payload
        return orjson.loads(payload) if payload else None


def _message(status: int, payload: bytes) -> str:
    try:
        error = orjson.loads(payload).get("error") or {}
        message = str(error.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    if not message:
        message = payload.decode("utf-8", "replace")[:300] or f"HTTP {status}"
    if status == 401:
        return f"{message} (log in with `lockgate login`, or set LOCKGATE_TOKEN)"
    return message
