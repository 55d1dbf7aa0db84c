"""The in-memory keyring and the key service behind it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from lockgate.errors import Unauthenticated
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey, prefix_of
from lockgate.security.keyring import Keyring, Principal
from lockgate.store import versions
from lockgate.store.tables import tenants
from lockgate.store.watch import ChangeWatcher


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def loaded(instance: Instance, clock: FakeClock | None = None) -> Keyring:
    keyring = Keyring(instance.pepper, clock) if clock is not None else Keyring(instance.pepper)
    keyring.load(instance.engine)
    return keyring


def refused(keyring: Keyring, authorization: str | None) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        keyring.authenticate(authorization)
    assert caught.value.status == 401
    return caught.value


@pytest.mark.parametrize(
    ("key_models", "tenant_models", "expected"),
    [
        (["m", "x"], ["m", "y"], frozenset({"m"})),
        (None, ["m", "y"], frozenset({"m", "y"})),
        (["x"], None, frozenset({"x"})),
        (None, None, None),
        (["x"], ["y"], frozenset()),
    ],
)
def test_good_key_gives_principal_with_intersected_models(
    instance: Instance,
    key_models: list[str] | None,
    tenant_models: list[str] | None,
    expected: frozenset[str] | None,
) -> None:
    tenant = instance.tenants.create("acme", tenant_models)
    issued = instance.keys.create("acme", role="client", allowed_models=key_models)
    principal = loaded(instance).authenticate(f"Bearer {issued.secret}")
    assert isinstance(principal, Principal)
    assert principal.tenant == "acme"
    assert principal.tenant_id == tenant.id
    assert principal.key_id == issued.info.id
    assert principal.key_prefix == issued.info.prefix
    assert principal.role == "client"
    assert principal.allowed_models == expected
    assert principal.expires_at is None
    if expected is None:
        assert principal.may_use("anything")
    else:
        assert principal.may_use("m") == ("m" in expected)
        assert not principal.may_use("y") or "y" in expected


def test_only_live_keys_of_enabled_tenants_are_loaded(instance: Instance) -> None:
    instance.tenants.create("acme")
    instance.keys.create("acme")
    instance.keys.create("acme", role="admin")
    keyring = loaded(instance)
    assert len(keyring) == 2
    assert keyring.version > 0


def test_wrong_secret_with_valid_prefix_is_refused(instance: Instance) -> None:
    instance.tenants.create("acme")
    issued = instance.keys.create("acme")
    keyring = loaded(instance)
    prefix = issued.info.prefix
    secret = issued.secret.removeprefix(prefix + "-")
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for token in (f"{prefix}-{tampered}", f"{prefix}-x", issued.secret + "x", issued.secret[:-1]):
        error = refused(keyring, f"Bearer {token}")
        assert error.code == "invalid_api_key"
        assert token not in error.message


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer ",
        "Bearer lg-0000000-short",
        "Bearer lg-00000000-unknownsecret",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_missing_or_malformed_keys_are_refused(instance: Instance, authorization: str | None) -> None:
    instance.tenants.create("acme")
    instance.keys.create("acme")
    error = refused(loaded(instance), authorization)
    assert error.code in ("missing_api_key", "invalid_api_key")
    if not authorization:
        assert error.code == "missing_api_key"


def test_key_made_with_another_pepper_does_not_authenticate(instance: Instance) -> None:
    instance.tenants.create("acme")
    issued = instance.keys.create("acme")
    assert instance.pepper != b"another-pepper"
    other = Keyring(b"another-pepper")
    other.load(instance.engine)
    assert len(other) == 1
    refused(other, f"Bearer {issued.secret}")
    assert loaded(instance).authenticate(f"Bearer {issued.secret}").key_id == issued.info.id


def test_expired_key_is_refused_with_expired_code(instance: Instance) -> None:
    instance.tenants.create("acme")
    expires = datetime.now(UTC) + timedelta(hours=1)
    issued = instance.keys.create("acme", expires_at=expires)
    clock = FakeClock(expires.timestamp() - 1)
    keyring = loaded(instance, clock)

    principal = keyring.authenticate(f"Bearer {issued.secret}")
    assert principal.expires_at == pytest.approx(expires.timestamp(), abs=1e-3)

    clock.now = expires.timestamp()
    error = refused(keyring, f"Bearer {issued.secret}")
    assert error.code == "expired_api_key"
    clock.now = expires.timestamp() + 86400
    assert refused(keyring, f"Bearer {issued.secret}").code == "expired_api_key"


def test_expired_check_does_not_reveal_a_wrong_secret(instance: Instance) -> None:
    instance.tenants.create("acme")
    expires = datetime.now(UTC) + timedelta(hours=1)
    issued = instance.keys.create("acme", expires_at=expires)
    keyring = loaded(instance, FakeClock(expires.timestamp() + 10))
    wrong = f"{issued.info.prefix}-{'x' * 43}"
    assert refused(keyring, f"Bearer {wrong}").code == "invalid_api_key"


def test_revoked_key_disappears_after_load(instance: Instance) -> None:
    instance.tenants.create("acme")
    issued = instance.keys.create("acme")
    kept = instance.keys.create("acme")
    keyring = loaded(instance)
    before = keyring.version
    keyring.authenticate(f"Bearer {issued.secret}")

    instance.keys.revoke(issued.info.prefix)
    keyring.authenticate(f"Bearer {issued.secret}")  # still cached until reloaded
    keyring.load(instance.engine)
    assert keyring.version > before
    refused(keyring, f"Bearer {issued.secret}")
    assert keyring.authenticate(f"Bearer {kept.secret}").key_id == kept.info.id
    assert len(keyring) == 1


def test_disabled_tenant_keys_are_not_loaded(instance: Instance) -> None:
    instance.tenants.create("acme")
    instance.tenants.create("beta")
    acme = instance.keys.create("acme")
    beta = instance.keys.create("beta")
    with instance.engine.begin() as connection:
        connection.execute(update(tenants).where(tenants.c.name == "acme").values(disabled=True))
    keyring = loaded(instance)
    assert len(keyring) == 1
    refused(keyring, f"Bearer {acme.secret}")
    assert keyring.authenticate(f"Bearer {beta.secret}").tenant == "beta"


@pytest.mark.parametrize("style", ["bare", "bearer-lower", "bearer-upper", "padded"])
def test_header_styles_accepted(instance: Instance, style: str) -> None:
    instance.tenants.create("acme")
    issued = instance.keys.create("acme")
    header = {
        "bare": issued.secret,
        "bearer-lower": f"bearer {issued.secret}",
        "bearer-upper": f"BEARER {issued.secret}",
        "padded": f"Bearer  {issued.secret} ",
    }[style]
    assert loaded(instance).authenticate(header).key_id == issued.info.id


def test_issued_key_shape(admin_key: IssuedKey) -> None:
    assert prefix_of(admin_key.secret) == admin_key.info.prefix
    assert admin_key.info.role == "admin"
    assert admin_key.info.tenant == "default"
    assert prefix_of("lg-1234567-abc") is None
    assert prefix_of("sk-12345678-abc") is None
    assert prefix_of("lg-12345678-") is None


def test_key_service_rejects_bad_arguments(instance: Instance) -> None:
    instance.tenants.create("acme")
    with pytest.raises(ValueError, match="role"):
        instance.keys.create("acme", role="root")
    with pytest.raises(ValueError, match="timezone"):
        instance.keys.create("acme", expires_at=datetime.now() + timedelta(days=1))
    with pytest.raises(LookupError):
        instance.keys.create("nope")
    assert instance.keys.list() == []


def test_key_status_reflects_revocation_and_expiry(instance: Instance) -> None:
    instance.tenants.create("acme")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    issued = instance.keys.create("acme", expires_at=soon)
    [info] = instance.keys.list()
    assert info.status() == "active"
    assert info.status(soon + timedelta(seconds=1)) == "expired"
    assert info.expires_at == pytest.approx(soon, abs=timedelta(milliseconds=1))
    revoked = instance.keys.revoke(issued.info.id)
    assert revoked.status() == "revoked"
    assert revoked.revoked_at is not None


async def test_watcher_picks_up_revocation_within_a_second(instance: Instance) -> None:
    instance.tenants.create("acme")
    issued = instance.keys.create("acme")
    keyring = loaded(instance)
    watcher = keyring_watcher(keyring, instance)
    task = asyncio.create_task(watcher.run())
    try:
        keyring.authenticate(f"Bearer {issued.secret}")
        await asyncio.to_thread(instance.keys.revoke, issued.info.prefix)
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                keyring.authenticate(f"Bearer {issued.secret}")
            except Unauthenticated:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("revoked key still accepted after 1 s")
        # `last_ok` is stamped when the reload coroutine resumes, just after the keyring swapped.
        while watcher.last_ok == 0 and time.monotonic() - started < 2.0:
            await asyncio.sleep(0.01)
        assert watcher.last_ok > 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watcher_picks_up_a_new_key(instance: Instance) -> None:
    instance.tenants.create("acme")
    keyring = loaded(instance)
    assert len(keyring) == 0
    watcher = keyring_watcher(keyring, instance)
    task = asyncio.create_task(watcher.run())
    try:
        issued = await asyncio.to_thread(instance.keys.create, "acme")
        deadline = time.monotonic() + 1.0
        while len(keyring) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert keyring.authenticate(f"Bearer {issued.secret}").key_id == issued.info.id
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def keyring_watcher(keyring: Keyring, instance: Instance) -> ChangeWatcher:
    watcher = ChangeWatcher(instance.engine, interval=0.1)
    watcher.watch(versions.AUTH, lambda: keyring.version, keyring.load)
    return watcher
