"""The authorization matrix: every control API operation, sent by every kind of caller, against the table
in docs/rbac.md; every refusal answers the right status and leaves an audit entry naming it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lockgate.security.permissions import PERMISSIONS
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from lockgate.store.tables import audit_log, users
from tests.support.gateway import RunningGateway
from tests.support.people import token_of

DOCS = Path(__file__).parents[2] / "docs" / "rbac.md"
ROW = re.compile(
    r"^\| `(?P<op>[a-z_]+\.[a-z_]+)` \| `(?P<method>[A-Z]+) (?P<path>\S+)` "
    r"\| (?P<who>[^|]+) \| (?P<what>[^|]+) \|$"
)
PATH_VALUES = {
    "tenant": "default",
    "name": "nobody",
    "version": "1",
    "reference": "nobody@champion",
    "alias": "champion",
    "release_id": "rel_" + "0" * 32,
    "route": "no-route",
    "environment": "dev",
    "run_id": "run_missing",
    "format": "json",
    "evidence_id": "evd_" + "0" * 24,
    "key": "key_missing",
    "token": "tok_missing",
}
QUERY = {"gates.evaluate": {"environment": "stage"}, "prompts.diff": {"a": "1.0.0", "b": "1.0.1"}}
TENANT_ROLES = {"viewer", "editor", "approver", "deployer", "admin"}


@dataclass(frozen=True)
class Row:
    operation: str
    method: str
    path: str
    who: str


def documented() -> dict[str, Row]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match["op"]] = Row(match["op"], match["method"], match["path"], match["who"].strip())
    return rows


def allowed(who: str, caller: str) -> bool:
    """Whether the table's "who may" admits ``caller`` (a role in `default`, or `stranger`: acme's admin)."""
    if who == "any user":
        return True
    if who == "the invitation code's holder":
        return False
    roles = set(who.removesuffix(" of the platform tenant").split(" or "))
    if caller == "stranger":
        return False
    if caller == "admin":
        return True
    # Any role in the tenant includes viewer; `platform` roles are roles in `default`, like these callers'.
    return caller in roles or ("viewer" in roles and caller in TENANT_ROLES)


def test_the_table_in_the_docs_is_the_permission_table_and_the_api() -> None:
    from fastapi import FastAPI

    from lockgate.api.app import ROUTERS

    api = FastAPI()
    for module in ROUTERS:
        api.include_router(module.router, prefix="/api/v1")
    operations = {
        op["operationId"]: (method.upper(), path)
        for path, methods in api.openapi()["paths"].items()
        for method, op in methods.items()
    }
    rows = documented()
    assert set(rows) == set(PERMISSIONS) == set(operations)
    for name, row in rows.items():
        assert (row.method, row.path) == operations[name], name
        assert row.who == PERMISSIONS[name].who, name


@dataclass(frozen=True)
class Caller:
    kind: str
    name: str
    token: str | None


@pytest.fixture
def callers(services: Services, admin: Actor, admin_token: str) -> list[Caller]:
    found = [Caller("admin", "admin", admin_token)]
    for role in (Role.VIEWER, Role.EDITOR, Role.APPROVER, Role.DEPLOYER):
        found.append(
            Caller(role.value, f"{role.value}-user", token_of(services, admin, f"{role.value}-user", role))
        )
    services.tenants.create(admin, "acme")
    admin = services.tokens.authenticate(admin_token)  # now admin of acme too, as its creator
    found.append(Caller("stranger", "olga", token_of(services, admin, "olga", Role.ADMIN, tenant="acme")))
    expired = token_of(services, admin, "xavier", Role.ADMIN)
    with services.engine.begin() as connection:
        user_id = connection.execute(sa.select(users.c.id).where(users.c.name == "xavier")).scalar_one()
        past = datetime.now(UTC) - timedelta(minutes=1)
        expired = services.tokens.issue(connection, user_id, "xavier", "old", past).secret
    found.append(Caller("expired", "xavier", expired))
    revoked = token_of(services, admin, "rita", Role.ADMIN)
    rita = services.tokens.authenticate(revoked)
    services.tokens.revoke(rita, revoked.split("-", 2)[0] + "-" + revoked.split("-", 2)[1])
    found.append(Caller("revoked", "rita", revoked))
    found.append(Caller("none", "anonymous", None))
    return found


def newest_denial(services: Services) -> Any:
    with services.engine.connect() as connection:
        return connection.execute(
            sa.select(audit_log)
            .where(audit_log.c.outcome == "denied")
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        ).first()


def test_every_operation_answers_every_caller_as_the_table_says_and_audits_every_refusal(
    server: RunningGateway, services: Services, callers: list[Caller]
) -> None:
    rows = documented()
    problems: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for row in rows.values():
            path = row.path.format(**PATH_VALUES)
            for caller in callers:
                headers = {"authorization": f"Bearer {caller.token}"} if caller.token else {}
                before = newest_denial(services)
                body: dict[str, Any] | None = {} if row.method in ("POST", "PUT") else None
                answer = http.request(
                    row.method, path, headers=headers, json=body, params=QUERY.get(row.operation)
                )
                label = f"{row.operation} as {caller.kind}: {answer.status_code}"
                denial = newest_denial(services)
                new = denial is not None and (before is None or denial.seq > before.seq)
                if caller.kind in ("none", "expired", "revoked"):
                    if answer.status_code != 401:
                        problems.append(f"{label}, expected 401")
                    elif not new or denial.action != "auth.token" or denial.actor != caller.name:
                        problems.append(
                            f"{label}: the refused token is not audited as auth.token by {caller.name}"
                        )
                elif row.who == "the invitation code's holder":
                    if answer.status_code != 401:
                        problems.append(f"{label}, expected 401: a control token is not an invitation code")
                elif allowed(row.who, caller.kind):
                    if answer.status_code in (401, 403):
                        problems.append(f"{label}, expected to be allowed ({row.who}): {answer.text[:200]}")
                elif answer.status_code != 403:
                    problems.append(f"{label}, expected 403 ({row.who})")
                elif not new or denial.action != row.operation or denial.actor != caller.name:
                    problems.append(
                        f"{label}: the refusal is not audited as {row.operation} by {caller.name}"
                    )
                if answer.status_code >= 500:
                    problems.append(f"{label}: a server error")
    assert problems == []


def test_an_invitation_code_is_the_only_credential_that_redeems(
    server: RunningGateway, services: Services, admin: Actor
) -> None:
    invitation = services.users.invite(admin, "default", "nina", [Role.VIEWER])
    with httpx.Client(base_url=server.url, timeout=30) as http:
        redeemed = http.post(
            "/api/v1/invitations/redeem", headers={"authorization": f"Bearer {invitation.code}"}
        )
        assert redeemed.status_code == 201
        token = redeemed.json()["token"]
        me = http.get("/api/v1/users/me", headers={"authorization": f"Bearer {token}"})
        assert me.json() == {"name": "nina", "roles": {"default": ["viewer"]}}
        again = http.post(
            "/api/v1/invitations/redeem", headers={"authorization": f"Bearer {invitation.code}"}
        )
        assert again.status_code == 401
        assert "already redeemed" in again.json()["error"]["message"]


def test_a_refused_request_is_answered_before_its_body_is_read(
    server: RunningGateway, admin_token: str
) -> None:
    """A 50 MB body without a token gets 401; with a token, a body over the 16 MiB limit gets 413."""
    big = b"{" + b" " * (50 * 1024 * 1024) + b"}"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        json = {"content-type": "application/json"}
        answer = http.post("/api/v1/tenants", content=big, headers=json)
        assert answer.status_code == 401
        authorised = {**json, "authorization": f"Bearer {admin_token}"}
        answer = http.post("/api/v1/tenants", content=big, headers=authorised)
        assert answer.status_code == 413
        assert "exceeds the limit of 16777216 bytes" in answer.json()["error"]["message"]
        streamed = http.post("/api/v1/tenants", content=iter([big]), headers=authorised)
        assert streamed.status_code == 413
        assert http.post("/api/v1/tenants", json={"name": "fine"}, headers=authorised).status_code == 201
