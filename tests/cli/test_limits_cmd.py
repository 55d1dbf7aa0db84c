"""``lockgate limits`` and ``lockgate budgets`` as people use them, against the whole server (gateway and
control API on the stub upstream): a platform admin sets a tenant's rules and budgets from files, the
tenant's own people read them and what each budget has spent, from calls made through the gateway with
keys in teams."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
import yaml

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import budget_alerts, request_log
from tests.support.cli import Cli
from tests.support.gateway import RunningGateway
from tests.support.people import token_of


def write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


@pytest.fixture
def acme(cli: Cli) -> None:
    """Tenant acme, created by the platform admin (who thereby administers it too)."""
    cli.ok("tenants", "create", "acme")


def person(services: Services, cli: Cli, name: str, role: Role, tenant: str = "acme") -> Cli:
    admin = services.tokens.authenticate(cli.token or "")
    return cli.as_(token_of(services, admin, name, role, tenant=tenant))


RULES = {
    "rules": [
        {
            "name": "per-key",
            "scope": {"key": "each"},
            "requests_per_minute": 600,
            "tokens_per_minute": 200000,
            "concurrent": 20,
        },
        {"name": "big-calls", "scope": {"model": "m"}, "max_tokens": 4096, "max_cost_usd": 0.5},
    ]
}


@pytest.mark.usefixtures("acme")
def test_a_platform_admin_sets_rules_from_a_file_and_the_tenant_reads_them(
    cli: Cli, services: Services, tmp_path: Path
) -> None:
    rules = write(tmp_path, "rules.yaml", RULES)
    vic = person(services, cli, "vic", Role.VIEWER)
    olga = person(services, cli, "olga", Role.ADMIN)

    refused = olga.fails("limits", "set", rules, "--tenant", "acme")
    assert "olga may not limits.set: it needs admin of the platform tenant" in refused.stderr
    assert vic.ok("limits", "list", "--tenant", "acme").stdout == "tenant acme has no limit rules\n"

    done = cli.ok("limits", "set", rules, "--tenant", "acme")
    assert done.stdout.splitlines() == [
        "limit rule per-key set for key=each: 600 requests/min, 200000 tokens/min, 20 concurrent",
        "limit rule big-calls set for model=m: max_tokens 4096, at most $0.5 a call",
    ]
    table = [line.split() for line in vic.ok("limits", "list", "--tenant", "acme").stdout.splitlines()]
    assert table == [
        ["NAME", "SCOPE", "REQ/MIN", "TOKENS/MIN", "CONCURRENT", "MAX_TOKENS", "MAX_COST", "SET", "BY"],
        ["big-calls", "model=m", "-", "-", "-", "4096", "$0.5", "admin"],
        ["per-key", "key=each", "600", "200000", "20", "-", "-", "admin"],
    ]
    listed = {r["name"]: r for r in vic.json("limits", "list", "--tenant", "acme")}
    assert listed["per-key"]["scope"] == {"key": "each", "team": None, "model": None}
    assert listed["per-key"]["id"].startswith("lim_")

    # The same file again changes nothing but who set it last; a changed limit replaces the rule.
    again = cli.json("limits", "set", rules, "--tenant", "acme")
    assert {r["name"]: r["id"] for r in again} == {name: r["id"] for name, r in listed.items()}
    RULES["rules"][0]["requests_per_minute"] = 60
    try:
        cli.ok("limits", "set", write(tmp_path, "slower.yaml", RULES), "--tenant", "acme")
    finally:
        RULES["rules"][0]["requests_per_minute"] = 600
    assert {r["name"]: r["requests_per_minute"] for r in vic.json("limits", "list", "--tenant", "acme")} == {
        "big-calls": None,
        "per-key": 60,
    }

    # Another tenant's rules are its own; deleting one leaves the others.
    assert cli.json("limits", "list") == []
    assert vic.fails("limits", "delete", "big-calls", "--tenant", "acme").stderr.startswith(
        "Error: vic may not limits.delete"
    )
    assert cli.ok("limits", "delete", "big-calls", "--tenant", "acme").stdout == (
        "deleted limit rule big-calls of tenant acme\n"
    )
    gone = cli.fails("limits", "delete", "big-calls", "--tenant", "acme")
    assert "tenant 'acme' has no limit rule 'big-calls'" in gone.stderr
    assert [r["name"] for r in vic.json("limits", "list", "--tenant", "acme")] == ["per-key"]


@pytest.mark.usefixtures("acme")
def test_a_broken_file_is_refused_naming_the_file_and_the_field(cli: Cli, tmp_path: Path) -> None:
    def refusal(name: str, document: Any, command: str = "limits") -> str:
        path = write(tmp_path, name, document)
        result = cli.fails(command, "set", path, "--tenant", "acme")
        assert "Traceback" not in result.output
        return result.stderr.strip().removeprefix(f"Error: {path}: ")

    assert refusal("zero.yaml", {"rules": [RULES["rules"][0], {"name": "z", "requests_per_minute": 0}]}) == (
        "rules[1].requests_per_minute: Input should be greater than or equal to 1 "
        "(set before it: per-key; fix the file and run it again)"
    )
    assert refusal("nothing.yaml", {"name": "idle", "scope": {"team": "ops"}}) == (
        "a rule sets at least one of requests_per_minute, tokens_per_minute, concurrent, max_tokens, "
        "max_cost_usd"
    )
    assert refusal("typo.yaml", {"rules": [{"name": "t", "request_per_minute": 5}]}) == (
        "rules[0].request_per_minute: Extra inputs are not permitted"
    )
    assert refusal("model.yaml", {"name": "g", "scope": {"model": "gpt-9"}, "concurrent": 1}) == (
        "scope.model: this gateway serves no model 'gpt-9'; it serves m, other"
    )
    assert refusal("key.yaml", {"name": "k", "scope": {"key": "key_nobody"}, "concurrent": 1}).startswith(
        "scope.key: tenant 'acme' has no key 'key_nobody'"
    )
    assert refusal(
        "twice.yaml", {"rules": [{"name": "a", "concurrent": 1}, {"name": "a", "concurrent": 2}]}
    ) == ("rules[1].name: 'a' is also the name of rules[0]")
    assert refusal("nameless.yaml", {"rules": [{"concurrent": 1}]}) == "rules[0].name: every rule has a name"
    assert refusal("list.yaml", [{"name": "a"}]).startswith("a rule file holds one rule")
    assert refusal("mixed.yaml", {"budgets": [{"name": "b"}]}) == (
        "budgets: this is a budgets file; `lockgate budgets set` reads it"
    )
    assert refusal("period.yaml", {"name": "b", "period": "year", "amount_usd": 5}, "budgets") == (
        "period: Input should be 'day', 'week' or 'month'"
    )
    assert refusal(
        "team.yaml", {"name": "b", "period": "day", "amount_usd": 5, "scope": {"team": "R&D"}}, "budgets"
    ).startswith("scope.team: a team is 1-100 lower-case letters")
    assert refusal(
        "both.yaml",
        {"name": "b", "period": "day", "amount_usd": 5, "scope": {"team": "a", "key": "each"}},
        "budgets",
    ) == ("scope: a budget is for the tenant, a team or a key: give at most one of key, team")
    # Only the rule before the refused one was set.
    assert [r["name"] for r in cli.json("limits", "list", "--tenant", "acme")] == ["per-key"]
    assert cli.json("budgets", "list", "--tenant", "acme") == []


# --- budgets and what they spent ---------------------------------------------------------------------


def new_key(cli: Cli, *args: str) -> tuple[str, str]:
    """(secret, id) of a new key of acme."""
    secret = cli.ok("keys", "create", "--tenant", "acme", "-q", *args).stdout.strip()
    prefix = "-".join(secret.split("-")[:2])
    [key_id] = [k["id"] for k in cli.json("keys", "list", "--tenant", "acme") if k["prefix"] == prefix]
    return secret, key_id


def call(server: RunningGateway, key: str) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "how much is this?"}])


def logged(services: Services, n: int) -> list[Any]:
    """acme's rows of the request log, once the gateway has written ``n`` (it writes in batches)."""
    tenant_id = services.tenants.get("acme").id
    deadline = time.monotonic() + 10
    while True:
        with services.engine.connect() as connection:
            rows = connection.execute(
                sa.select(request_log).where(request_log.c.tenant_id == tenant_id)
            ).all()
        if len(rows) >= n or time.monotonic() > deadline:
            assert len(rows) == n
            return list(rows)
        time.sleep(0.05)


def by_budget(status: list[dict[str, Any]]) -> dict[tuple[str, str | None], float]:
    """(budget, team or key) -> spent, from ``budgets status --json``."""
    return {(b["name"], line["subject"]): line["spent_usd"] for b in status for line in b["spend"]}


@pytest.mark.usefixtures("acme")
def test_budget_status_shows_what_each_team_spent_through_the_gateway(
    cli: Cli, services: Services, server: RunningGateway, tmp_path: Path
) -> None:
    research, research_id = new_key(cli, "--team", "research")
    ops, ops_id = new_key(cli, "--team", "ops")
    loner, loner_id = new_key(cli)
    budgets = write(
        tmp_path,
        "budgets.yaml",
        {
            "budgets": [
                {"name": "teams", "scope": {"team": "each"}, "period": "month", "amount_usd": 50},
                {"name": "acme-daily", "period": "day", "amount_usd": 100, "soft_ratio": None},
                {"name": "loner", "scope": {"key": loner_id}, "period": "week", "amount_usd": 5},
            ]
        },
    )
    vic = person(services, cli, "vic", Role.VIEWER)
    assert "vic may not budgets.set" in vic.fails("budgets", "set", budgets, "--tenant", "acme").stderr
    assert cli.ok("budgets", "set", budgets, "--tenant", "acme").stdout.splitlines() == [
        "budget teams set for team=each: $50.00 a month, alert at 80%",
        "budget acme-daily set for tenant: $100.00 a day, no alert",
        f"budget loner set for key={loner_id}: $5.00 a week, alert at 80%",
    ]
    listing = [line.split() for line in vic.ok("budgets", "list", "--tenant", "acme").stdout.splitlines()]
    assert listing == [
        ["NAME", "SCOPE", "PERIOD", "AMOUNT", "SOFT", "SET", "BY"],
        ["acme-daily", "tenant", "day", "$100.00", "-", "admin"],
        ["loner", f"key={loner_id}", "week", "$5.00", "80%", "admin"],
        ["teams", "team=each", "month", "$50.00", "80%", "admin"],
    ]

    for key in (research, research, ops, loner):
        call(server, key)
    rows = logged(services, 4)
    assert sorted((r.key_id, r.team) for r in rows) == sorted(
        [(research_id, "research"), (research_id, "research"), (ops_id, "ops"), (loner_id, None)]
    )
    assert all(r.cost_usd > 0 for r in rows)

    def spent(**where: Any) -> float:
        return float(sum(r.cost_usd for r in rows if all(getattr(r, k) == v for k, v in where.items())))

    status = vic.json("budgets", "status", "--tenant", "acme")
    assert by_budget(status) == pytest.approx(
        {
            ("acme-daily", None): spent(),
            ("loner", loner_id): spent(key_id=loner_id),
            ("teams", "research"): spent(team="research"),
            ("teams", "ops"): spent(team="ops"),
        }
    )
    teams = next(b for b in status if b["name"] == "teams")
    now = datetime.now(UTC)
    assert teams["period_start"] == datetime(now.year, now.month, 1, tzinfo=UTC).isoformat()
    assert teams["soft_cap_usd"] == pytest.approx(40.0)
    assert 0 < teams["resets_in_s"] <= 31 * 86400

    # A key moved to another team spends there from its next call on; what it spent stays where it was.
    moved = cli.ok("keys", "set-team", ops_id, "research", "--tenant", "acme").stdout
    assert moved.startswith(f"key {ops_id} (lg-") and moved.endswith(") is in team research now\n")
    with services.engine.connect() as connection:
        auth = versions.current(connection, versions.AUTH)
    deadline = time.monotonic() + 5
    while server.gateway.keyring.version < auth and time.monotonic() < deadline:
        time.sleep(0.05)
    call(server, ops)
    rows = logged(services, 5)
    status = vic.json("budgets", "status", "--tenant", "acme")
    found = by_budget(status)
    assert (found["teams", "research"], found["teams", "ops"]) == pytest.approx(
        (spent(team="research"), spent(team="ops"))
    )
    assert spent(key_id=ops_id, team="research") > 0

    # The table: one line per team that spent, and the soft alert the gateway recorded for research.
    teams_id = next(b["id"] for b in cli.json("budgets", "list", "--tenant", "acme") if b["name"] == "teams")
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    with services.engine.begin() as connection:
        connection.execute(
            budget_alerts.insert().values(
                budget_id=teams_id, scope="*:research:*", period_start=start, fired_at=start, spent_usd=40.0
            )
        )
    table = vic.ok("budgets", "status", "--tenant", "acme").stdout.splitlines()
    assert table[0].split() == [
        "BUDGET",
        "SCOPE",
        "PERIOD",
        "SPENT",
        "/",
        "AMOUNT",
        "USED",
        "SOFT",
        "ALERT",
        "RESETS",
        "IN",
    ]
    lines = {(line.split()[0], line.split()[1]): line.split() for line in table[1:]}
    assert set(lines) == {
        ("acme-daily", "tenant"),
        ("loner", f"key={loner_id}"),
        ("teams", "team=research"),
        ("teams", "team=ops"),
    }
    research_line = lines[("teams", "team=research")]
    assert research_line[2:5] == ["month", f"${spent(team='research'):.6f}", "/"]
    assert research_line[5:7] == ["$50.00", "0.0%"]
    assert research_line[7:10] == ["fired", start.strftime("%Y-%m-%d"), "00:00Z"]
    assert lines[("teams", "team=ops")][7] == "no"
    assert lines[("acme-daily", "tenant")][7] == "-"  # no soft cap

    # Deleting a budget takes it out of the status.
    cli.ok("budgets", "delete", "teams", "--tenant", "acme")
    assert [b["name"] for b in vic.json("budgets", "status", "--tenant", "acme")] == ["acme-daily", "loner"]
    assert "has no budget 'teams'" in cli.fails("budgets", "delete", "teams", "--tenant", "acme").stderr


def test_key_teams_from_the_command_line(cli: Cli, services: Services, admin: Actor) -> None:
    created = cli.ok("keys", "create", "--team", "research", "--name", "app").stdout
    assert "team:    research" in created
    [key] = [k for k in cli.json("keys", "list") if k["name"] == "app"]
    assert key["team"] == "research"
    key_id = key["id"]
    header = cli.ok("keys", "list").stdout.splitlines()[0].split()
    assert header == ["ID", "PREFIX", "ENV", "ROLE", "STATUS", "EXPIRES", "TEAM", "MODELS"]
    row = next(line for line in cli.ok("keys", "list").stdout.splitlines() if key_id in line).split()
    assert row[-2:] == ["research", "*"]

    assert cli.ok("keys", "set-team", key["prefix"], "--none").stdout == (
        f"key {key_id} ({key['prefix']}) is in no team now\n"
    )
    assert [k["team"] for k in cli.json("keys", "list") if k["id"] == key_id] == [None]
    usage = cli.fails("keys", "set-team", key_id, code=2)
    assert "give a TEAM or --none" in usage.stderr
    cli.fails("keys", "set-team", key_id, "ops", "--none", code=2)
    bad = cli.fails("keys", "set-team", key_id, "each")
    assert "team: a team is 1-100 lower-case letters" in bad.stderr
    viewer = cli.as_(token_of(services, admin, "vic", Role.VIEWER))
    refused = viewer.fails("keys", "set-team", key_id, "ops")
    assert "vic may not keys.set_team in tenant 'default': it needs admin" in refused.stderr
