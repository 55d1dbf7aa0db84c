"""The in-memory keyring and the key service behind it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from lockgate.errors import Unauthenticated
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey, prefix_of
from lockgate.security.keyring import Keyring, Principal
from lockgate.security.rbac import SYSTEM, Actor
from lockgate.server.bootstrap import CONFIG
from lockgate.service_errors import Forbidden, Invalid, NotFound
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import audit_log, tenants
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


def new_tenant(services: Services, admin_token: str, name: str, models: list[str] | None = None) -> Actor:
    """Create tenant ``name`` as the platform admin; returns the admin as they act now (its admin too)."""
    services.tenants.create(services.tokens.authenticate(admin_token), name, models)
    return services.tokens.authenticate(admin_token)


@pytest.fixture
def acme(services: Services, admin_token: str) -> Actor:
    """The platform admin, who created tenant ``acme`` and so administers it."""
    return new_tenant(services, admin_token, "acme")


@pytest.mark.parametrize(
    ("key_models", "tenant_models", "expected"),
    [
        (["m"], ["m", "other"], frozenset({"m"})),
        (None, ["m", "other"], frozenset({"m", "other"})),
        (["other"], None, frozenset({"other"})),
        (None, None, None),
    ],
)
def test_good_key_gives_principal_with_intersected_models(
    services: Services,
    instance: Instance,
    admin_token: str,
    key_models: list[str] | None,
    tenant_models: list[str] | None,
    expected: frozenset[str] | None,
) -> None:
    admin = new_tenant(services, admin_token, "acme", tenant_models)
    tenant = services.tenants.get("acme")
    issued = services.keys.create(admin, "acme", role="client", allowed_models=key_models)
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
        assert principal.may_use("other") == ("other" in expected)


def test_a_tenant_narrowed_after_issue_narrows_its_keys(
    services: Services, instance: Instance, admin_token: str
) -> None:
    admin = new_tenant(services, admin_token, "acme", ["m", "other"])
    issued = services.keys.create(admin, "acme", allowed_models=["other"])
    services.tenants.sync(CONFIG, "acme", ["m"])  # the configuration file now allows only m
    principal = loaded(instance).authenticate(f"Bearer {issued.secret}")
    assert principal.allowed_models == frozenset()
    assert not principal.may_use("other")
    assert not principal.may_use("m")


def test_key_allow_list_must_stay_within_what_the_tenant_and_the_gateway_allow(
    services: Services, admin_token: str
) -> None:
    admin = new_tenant(services, admin_token, "acme", ["m"])
    with pytest.raises(Invalid, match="the tenant may not use other"):
        services.keys.create(admin, "acme", allowed_models=["m", "other"])
    with pytest.raises(Invalid, match="unknown model"):
        services.keys.create(admin, "acme", allowed_models=["x"])
    with pytest.raises(Invalid, match="route:NAME"):
        services.keys.create(admin, "acme", allowed_models=["route:Not A Route"])
    assert services.keys.list(admin, "acme") == []


def test_a_key_naming_only_routes_calls_only_those_routes(
    services: Services, instance: Instance, admin_token: str
) -> None:
    admin = new_tenant(services, admin_token, "acme", ["m"])
    issued = services.keys.create(admin, "acme", allowed_models=["route:qa"])
    principal = loaded(instance).authenticate(f"Bearer {issued.secret}")
    assert principal.may_use("route:qa")
    assert not principal.may_use("route:other-route")
    assert not principal.may_use("m")  # no model by name
    # Through its route, a release may use what the tenant allows.
    assert principal.may_route_to("m")
    assert not principal.may_route_to("other")


def test_only_live_keys_of_enabled_tenants_are_loaded(
    services: Services, instance: Instance, acme: Actor
) -> None:
    services.keys.create(acme, "acme")
    services.keys.create(acme, "acme", role="admin")
    keyring = loaded(instance)
    assert len(keyring) == 3  # and the bootstrap admin key of `default`
    assert keyring.version > 0


def test_wrong_secret_with_valid_prefix_is_refused(
    services: Services, instance: Instance, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme")
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
def test_missing_or_malformed_keys_are_refused(
    services: Services, instance: Instance, acme: Actor, authorization: str | None
) -> None:
    services.keys.create(acme, "acme")
    error = refused(loaded(instance), authorization)
    assert error.code in ("missing_api_key", "invalid_api_key")
    if not authorization:
        assert error.code == "missing_api_key"


def test_key_made_with_another_pepper_does_not_authenticate(
    services: Services, instance: Instance, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme")
    assert instance.pepper != b"another-pepper"
    other = Keyring(b"another-pepper")
    other.load(instance.engine)
    assert len(other) == 2
    refused(other, f"Bearer {issued.secret}")
    assert loaded(instance).authenticate(f"Bearer {issued.secret}").key_id == issued.info.id


def test_expired_key_is_refused_with_expired_code(
    services: Services, instance: Instance, acme: Actor
) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    issued = services.keys.create(acme, "acme", expires_at=expires)
    clock = FakeClock(expires.timestamp() - 1)
    keyring = loaded(instance, clock)

    principal = keyring.authenticate(f"Bearer {issued.secret}")
    assert principal.expires_at == pytest.approx(expires.timestamp(), abs=1e-3)

    clock.now = expires.timestamp()
    error = refused(keyring, f"Bearer {issued.secret}")
    assert error.code == "expired_api_key"
    clock.now = expires.timestamp() + 86400
    assert refused(keyring, f"Bearer {issued.secret}").code == "expired_api_key"


def test_expired_check_does_not_reveal_a_wrong_secret(
    services: Services, instance: Instance, acme: Actor
) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    issued = services.keys.create(acme, "acme", expires_at=expires)
    keyring = loaded(instance, FakeClock(expires.timestamp() + 10))
    wrong = f"{issued.info.prefix}-{'x' * 43}"
    assert refused(keyring, f"Bearer {wrong}").code == "invalid_api_key"


def test_revoked_key_disappears_after_load(services: Services, instance: Instance, acme: Actor) -> None:
    issued = services.keys.create(acme, "acme")
    kept = services.keys.create(acme, "acme")
    keyring = loaded(instance)
    before = keyring.version
    keyring.authenticate(f"Bearer {issued.secret}")

    services.keys.revoke(acme, "acme", issued.info.prefix)
    keyring.authenticate(f"Bearer {issued.secret}")  # still cached until reloaded
    keyring.load(instance.engine)
    assert keyring.version > before
    refused(keyring, f"Bearer {issued.secret}")
    assert keyring.authenticate(f"Bearer {kept.secret}").key_id == kept.info.id
    assert len(keyring) == 2  # kept, and the bootstrap admin key of `default`


def test_a_key_is_revoked_only_within_its_own_tenant(
    services: Services, instance: Instance, admin: Actor, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme")
    with pytest.raises(NotFound):
        services.keys.revoke(acme, "default", issued.info.prefix)
    assert loaded(instance).authenticate(f"Bearer {issued.secret}").tenant == "acme"


def test_disabled_tenant_keys_are_not_loaded(
    services: Services, instance: Instance, admin_token: str, acme: Actor
) -> None:
    both = new_tenant(services, admin_token, "beta")
    acme_key = services.keys.create(both, "acme")
    beta_key = services.keys.create(both, "beta")
    with instance.engine.begin() as connection:
        connection.execute(update(tenants).where(tenants.c.name == "acme").values(disabled=True))
    keyring = loaded(instance)
    assert len(keyring) == 2  # beta's, and the bootstrap admin key of `default`
    refused(keyring, f"Bearer {acme_key.secret}")
    assert keyring.authenticate(f"Bearer {beta_key.secret}").tenant == "beta"


@pytest.mark.parametrize("style", ["bare", "bearer-lower", "bearer-upper", "padded"])
def test_header_styles_accepted(services: Services, instance: Instance, acme: Actor, style: str) -> None:
    issued = services.keys.create(acme, "acme")
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


def test_key_service_rejects_bad_arguments(services: Services, acme: Actor) -> None:
    with pytest.raises(Invalid, match="role"):
        services.keys.create(acme, "acme", role="root")
    with pytest.raises(Invalid, match="timezone"):
        services.keys.create(acme, "acme", expires_at=datetime.now() + timedelta(days=1))
    with pytest.raises(Invalid, match="environment"):
        services.keys.create(acme, "acme", environment="qa")
    # Nobody holds a role in a tenant that does not exist; the server itself learns it is unknown.
    with pytest.raises(Forbidden):
        services.keys.create(acme, "nope")
    with pytest.raises(NotFound):
        services.keys.create(SYSTEM, "nope")
    assert services.keys.list(acme, "acme") == []


def test_only_a_tenant_admin_manages_its_keys(services: Services, admin: Actor, acme: Actor) -> None:
    # `admin` was authenticated before acme existed: admin of `default`, no role in acme.
    with pytest.raises(Forbidden):
        services.keys.create(admin, "acme")
    with pytest.raises(Forbidden):
        services.keys.list(admin, "acme")
    issued = services.keys.create(acme, "acme")
    with pytest.raises(Forbidden):
        services.keys.revoke(admin, "acme", issued.info.prefix)
    assert services.keys.list(acme, "acme")[0].status() == "active"


def test_key_status_reflects_revocation_and_expiry(services: Services, acme: Actor) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    issued = services.keys.create(acme, "acme", expires_at=soon)
    [info] = services.keys.list(acme, "acme")
    assert info.status() == "active"
    assert info.status(soon + timedelta(seconds=1)) == "expired"
    assert info.expires_at == pytest.approx(soon, abs=timedelta(milliseconds=1))
    revoked = services.keys.revoke(acme, "acme", issued.info.id)
    assert revoked.status() == "revoked"
    assert revoked.revoked_at is not None


def change_versions(instance: Instance) -> tuple[int, int]:
    with instance.engine.connect() as connection:
        return versions.current(connection, versions.AUTH), versions.current(connection, versions.LIMITS)


def test_a_keys_team_is_part_of_who_calls(services: Services, instance: Instance, acme: Actor) -> None:
    auth, limits = change_versions(instance)
    issued = services.keys.create(acme, "acme", team="research")
    assert issued.info.team == "research"
    # The team's limits and budgets apply to the new key: both copies reload.
    assert change_versions(instance) == (auth + 1, limits + 1)
    plain = services.keys.create(acme, "acme")
    assert plain.info.team is None
    assert change_versions(instance) == (auth + 2, limits + 1)
    keyring = loaded(instance)
    assert keyring.authenticate(f"Bearer {issued.secret}").team == "research"
    assert keyring.authenticate(f"Bearer {plain.secret}").team is None
    assert {k.id: k.team for k in services.keys.list(acme, "acme")} == {
        issued.info.id: "research",
        plain.info.id: None,
    }


def test_moving_a_key_to_another_team_reloads_keyrings_and_limits_and_is_audited(
    services: Services, instance: Instance, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme", name="app", team="research")
    keyring = loaded(instance)
    auth, limits = change_versions(instance)
    moved = services.keys.set_team(acme, "acme", issued.info.prefix, "ops")
    assert (moved.id, moved.team) == (issued.info.id, "ops")
    assert change_versions(instance) == (auth + 1, limits + 1)
    assert keyring.authenticate(f"Bearer {issued.secret}").team == "research"  # until it reloads
    keyring.load(instance.engine)
    assert keyring.authenticate(f"Bearer {issued.secret}").team == "ops"

    assert services.keys.set_team(acme, "acme", issued.info.id, None).team is None
    keyring.load(instance.engine)
    assert keyring.authenticate(f"Bearer {issued.secret}").team is None
    with instance.engine.connect() as connection:
        entries = connection.execute(
            select(audit_log).where(audit_log.c.action == "key.team").order_by(audit_log.c.seq)
        ).all()
    assert [(e.resource, e.before, e.after) for e in entries] == [
        (f"key:acme/{issued.info.id}", '{"team":"research"}', '{"team":"ops"}'),
        (f"key:acme/{issued.info.id}", '{"team":"ops"}', '{"team":null}'),
    ]


def test_team_names_are_checked_and_only_the_tenants_admins_set_them(
    services: Services, instance: Instance, admin: Actor, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme")
    for bad in ("each", "Research", "", "team:a", "x" * 101):
        with pytest.raises(Invalid, match=r"^team: a team is 1-100 lower-case letters"):
            services.keys.set_team(acme, "acme", issued.info.id, bad)
        with pytest.raises(Invalid, match=r"^team: "):
            services.keys.create(acme, "acme", team=bad)
    auth, limits = change_versions(instance)
    # `admin` was authenticated before acme existed: no role in acme.
    with pytest.raises(Forbidden, match=r"admin may not keys\.set_team in tenant 'acme': it needs admin"):
        services.keys.set_team(admin, "acme", issued.info.id, "research")
    with pytest.raises(NotFound, match="no key with id or prefix 'lg-00000000' in tenant 'acme'"):
        services.keys.set_team(acme, "acme", "lg-00000000", "research")
    assert change_versions(instance) == (auth, limits)
    assert [k.team for k in services.keys.list(acme, "acme")] == [None]


async def test_watcher_picks_up_revocation_within_a_second(
    services: Services, instance: Instance, acme: Actor
) -> None:
    issued = services.keys.create(acme, "acme")
    keyring = loaded(instance)
    watcher = keyring_watcher(keyring, instance)
    task = asyncio.create_task(watcher.run())
    try:
        keyring.authenticate(f"Bearer {issued.secret}")
        await asyncio.to_thread(services.keys.revoke, acme, "acme", issued.info.prefix)
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


async def test_watcher_picks_up_a_new_key(services: Services, instance: Instance, acme: Actor) -> None:
    keyring = loaded(instance)
    assert len(keyring) == 1  # the bootstrap admin key of `default`
    watcher = keyring_watcher(keyring, instance)
    task = asyncio.create_task(watcher.run())
    try:
        issued = await asyncio.to_thread(lambda: services.keys.create(acme, "acme"))
        deadline = time.monotonic() + 1.0
        while len(keyring) == 1 and time.monotonic() < deadline:
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
