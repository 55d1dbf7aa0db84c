"""Control tokens: what people hold to act on the control plane. They expire, can be revoked and
rotated by their owner, and nobody can mint one for someone else. Every failed use is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from lockgate.security.rbac import Actor, Role
from lockgate.security.tokens import DEFAULT_DAYS, MAX_DAYS
from lockgate.service_errors import Invalid, NotFound, Unauthorized
from lockgate.services import Services
from lockgate.store.tables import control_tokens
from tests.support.gateway import RunningGateway
from tests.support.people import token_of


def refused(services: Services, token: str | None) -> str:
    """The message of the 401 ``token`` gets."""
    with pytest.raises(Unauthorized) as caught:
        services.tokens.authenticate(token)
    assert caught.value.status == 401
    return caught.value.message


def last_refusal(services: Services, admin: Actor) -> dict[str, Any]:
    entry = services.trail.recent(admin, limit=1, action="auth.token")[0]
    assert entry["outcome"] == "denied"
    return entry


def expire(services: Services, prefix: str) -> None:
    """Let time pass for one token: its expiry is now in the past."""
    with services.engine.begin() as connection:
        connection.execute(
            update(control_tokens)
            .where(control_tokens.c.prefix == prefix)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


@pytest.fixture
def erin(services: Services, admin: Actor) -> str:
    """The control token erin got by redeeming her invitation (editor of ``default``)."""
    return token_of(services, admin, "erin", Role.EDITOR)


def prefix(token: str) -> str:
    return "-".join(token.split("-")[:2])


def test_a_token_acts_as_its_owner_with_their_roles(services: Services, erin: str) -> None:
    actor = services.tokens.authenticate(f"Bearer {erin}", source="10.0.0.9")
    assert (actor.name, actor.source, actor.system) == ("erin", "10.0.0.9", False)
    assert actor.roles == {"default": frozenset({Role.EDITOR})}


def test_an_expired_token_is_refused_and_the_refusal_audited(
    services: Services, admin: Actor, erin: str
) -> None:
    services.tokens.authenticate(erin)
    expire(services, prefix(erin))
    assert refused(services, erin) == f"control token {prefix(erin)} is expired"
    entry = last_refusal(services, admin)
    assert (entry["actor"], entry["action"]) == ("erin", "auth.token")
    assert entry["after"] == {"reason": "expired", "prefix": prefix(erin)}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("lgc-00000000-not-a-real-token", "invalid"),
        ("lg-00000000-an-api-key-is-no-token", "invalid"),
        ("Bearer nonsense", "invalid"),
    ],
)
def test_missing_and_unknown_tokens_are_refused_and_audited(
    services: Services, admin: Actor, token: str | None, reason: str
) -> None:
    message = refused(services, token)
    assert "not-a-real" not in message and "nonsense" not in message
    entry = last_refusal(services, admin)
    assert (entry["actor"], entry["after"]) == ("anonymous", {"reason": reason})


def test_a_wrong_secret_behind_a_real_prefix_is_refused(services: Services, admin: Actor, erin: str) -> None:
    forged = f"{prefix(erin)}-{'A' * 43}"
    assert refused(services, forged) == "invalid control token"
    assert last_refusal(services, admin)["actor"] == "anonymous"


def test_tokens_expire_after_90_days_unless_asked_and_never_after_a_year(
    services: Services, admin: Actor
) -> None:
    default = services.tokens.create(admin, "laptop")
    assert default.info.expires_at is not None
    expected = datetime.now(UTC) + timedelta(days=DEFAULT_DAYS)
    assert abs((default.info.expires_at - expected).total_seconds()) < 60
    short = services.tokens.create(admin, "ci", expires_in_days=1)
    assert short.info.expires_at is not None
    assert abs((short.info.expires_at - datetime.now(UTC) - timedelta(days=1)).total_seconds()) < 60
    for days in (0, -1, MAX_DAYS + 1):
        with pytest.raises(Invalid, match="expires_in_days"):
            services.tokens.create(admin, "bad", expires_in_days=days)
    assert {t.name for t in services.tokens.list(admin)} == {"bootstrap", "laptop", "ci"}


def test_a_revoked_token_stops_working(services: Services, admin: Actor, erin: str) -> None:
    me = services.tokens.authenticate(erin)
    second = services.tokens.create(me, "second")
    revoked = services.tokens.revoke(me, prefix(erin))
    assert revoked.status() == "revoked"
    assert refused(services, erin) == f"control token {prefix(erin)} is revoked"
    assert last_refusal(services, admin)["after"] == {"reason": "revoked", "prefix": prefix(erin)}
    # Her other token is untouched; revoking again changes nothing.
    assert services.tokens.authenticate(second.secret).name == "erin"
    again = services.tokens.revoke(services.tokens.authenticate(second.secret), prefix(erin))
    assert again.revoked_at == revoked.revoked_at


def test_rotation_replaces_the_token(services: Services, admin: Actor, erin: str) -> None:
    me = services.tokens.authenticate(erin)
    new = services.tokens.rotate(me, prefix(erin), expires_in_days=7)
    assert new.secret != erin
    assert (new.user, new.info.name) == ("erin", "invitation")
    assert services.tokens.authenticate(new.secret).name == "erin"
    assert refused(services, erin) == f"control token {prefix(erin)} is revoked"
    statuses = {t.prefix: t.status() for t in services.tokens.list(services.tokens.authenticate(new.secret))}
    assert statuses == {prefix(erin): "revoked", new.info.prefix: "active"}
    rotated = services.trail.recent(admin, limit=1, action="token.rotate")[0]
    assert rotated["after"]["replaces"] == prefix(erin)
    assert rotated["after"]["prefix"] == new.info.prefix
    # A revoked token cannot be rotated back to life.
    with pytest.raises(Invalid, match="revoked"):
        services.tokens.rotate(services.tokens.authenticate(new.secret), prefix(erin))


def test_only_the_owner_rotates_a_token(services: Services, admin: Actor, erin: str) -> None:
    # Not even a platform admin: rotating would hand them a working token of erin's.
    with pytest.raises(NotFound):
        services.tokens.rotate(admin, prefix(erin))
    entry = services.trail.recent(admin, limit=1)[0]
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("admin", "tokens.rotate", "denied")
    assert services.tokens.authenticate(erin).name == "erin"
    assert [t.user for t in services.tokens.list(admin)] == ["admin"]


def test_someone_elses_token_is_revoked_only_by_a_platform_admin(
    services: Services, admin: Actor, admin_token: str, erin: str
) -> None:
    # A tenant admin who is not a platform admin cannot, and learns nothing about the token.
    services.tenants.create(admin, "acme")
    acme_admin = services.tokens.authenticate(admin_token)
    otto = services.tokens.authenticate(token_of(services, acme_admin, "otto", Role.ADMIN, tenant="acme"))
    with pytest.raises(NotFound, match="you have no token"):
        services.tokens.revoke(otto, prefix(erin))
    entry = services.trail.recent(admin, limit=1)[0]
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("otto", "tokens.revoke", "denied")
    # erin, an editor, cannot revoke the admin's token either.
    with pytest.raises(NotFound):
        services.tokens.revoke(services.tokens.authenticate(erin), prefix(admin_token))
    assert services.tokens.authenticate(admin_token).name == "admin"
    assert services.tokens.authenticate(erin).name == "erin"
    # A platform admin can: a leaked token is cut off without waiting for its owner.
    assert services.tokens.revoke(admin, prefix(erin)).status() == "revoked"
    refused(services, erin)


def test_nobody_mints_a_token_for_someone_else(services: Services, admin: Actor, erin: str) -> None:
    minted = services.tokens.create(admin, "for-erin?")
    assert minted.user == "admin"
    assert services.tokens.authenticate(minted.secret).name == "admin"
    mine = services.tokens.list(services.tokens.authenticate(erin))
    assert [t.prefix for t in mine] == [prefix(erin)]


def test_the_api_has_no_way_to_name_the_tokens_owner(
    server: RunningGateway, services: Services, admin: Actor, admin_token: str, erin: str
) -> None:
    headers = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30) as api:
        assert api.post("/tokens", json={"name": "x", "user": "erin"}).status_code == 422
        created = api.post("/tokens", json={"name": "x"})
        assert created.status_code == 201, created.text
        assert created.json()["user"] == "admin"
        assert services.tokens.authenticate(created.json()["token"]).name == "admin"
        # The same request with erin's token makes erin's token: the owner is whoever asks.
        theirs = api.post("/tokens", json={"name": "y"}, headers={"authorization": f"Bearer {erin}"})
        assert theirs.json()["user"] == "erin"
