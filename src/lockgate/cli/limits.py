"""``lockgate limits`` and ``lockgate budgets``: a tenant's limit rules and budgets, and what it has spent.

Platform admins set rules and budgets from files kept in git (``limits set FILE``, ``budgets set FILE``:
one rule or budget, or a list under ``rules:`` / ``budgets:``); setting a name in use replaces it, so
running the same file again changes nothing. The tenant's own people list them and read each budget's
spend in its current period (``budgets status``). See docs/quotas-and-budgets.md.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client, ClientError
from lockgate.cli.files import read_yaml
from lockgate.cli.options import connected, emit_json, fail, json_option, tenant_option, tenant_path


@click.group()
def limits() -> None:
    """Limit rules: requests and tokens a minute, concurrent calls, tokens and cost per call."""


@click.group()
def budgets() -> None:
    """Budgets: spend per day, week or month of a tenant, team or key; status of the current period."""


# --- files ---------------------------------------------------------------------------------------------


def _entries(file: str, noun: str, plural: str, other: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, mapping) of each rule or budget in ``file``: label is ``rules[N]`` in a list, else ``""``."""
    shape = f"a {noun} file holds one {noun} (a mapping with its name) or `{plural}:`, a list of them"
    raw = read_yaml(Path(file), shape)
    if plural not in raw and other in raw:
        fail(f"{file}: {other}: this is a {other} file; `lockgate {other} set` reads it")
    items: list[tuple[str, Any]]
    if plural in raw:
        extra = sorted(set(raw) - {plural})
        if extra:
            fail(f"{file}: {extra[0]}: a file with `{plural}:` holds nothing else")
        listed = raw[plural]
        if not isinstance(listed, list) or not listed:
            fail(f"{file}: {plural}: a list of {plural}, at least one")
        items = [(f"{plural}[{n}]", item) for n, item in enumerate(listed)]
    else:
        items = [("", raw)]
    seen: dict[str, str] = {}
    found: list[tuple[str, dict[str, Any]]] = []
    for label, item in items:
        if not isinstance(item, dict):
            fail(f"{file}: {label}: a {noun} is a mapping with its name and settings")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            fail(f"{file}: {_field(label, 'name')}: every {noun} has a name")
        if name in seen:
            fail(f"{file}: {_field(label, 'name')}: {name!r} is also the name of {seen[name]}")
        seen[name] = label
        found.append((label, item))
    return found


def _field(label: str, path: str) -> str:
    return f"{label}.{path}" if label else path


def _put_all(
    client: Client, tenant: str, file: str, collection: str, where: str, entries: list[tuple[str, Any]]
) -> list[dict[str, Any]]:
    """PUT each entry in order; a refusal names the file and the field, and says what was set before."""
    stored: list[dict[str, Any]] = []
    for label, item in entries:
        try:
            stored.append(client.put(tenant_path(tenant, collection, item["name"]), item))
        except ClientError as exc:
            message = exc.message
            if message.startswith(f"{where}: "):
                # The server names the document "rule" or "budget"; the author reads it as this file.
                rest = message.removeprefix(f"{where}: ")
                if rest.startswith("(root): "):
                    rest = rest.removeprefix("(root): ")
                    message = f"{label}: {rest}" if label else rest
                else:
                    message = _field(label, rest)
                message = f"{file}: {message}"
            if stored:
                names = ", ".join(s["name"] for s in stored)
                message += f" (set before it: {names}; fix the file and run it again)"
            fail(message)
    return stored


# --- rendering -----------------------------------------------------------------------------------------


def scope_text(scope: dict[str, Any]) -> str:
    """``key=each, model=m``; ``tenant`` for a scope that names nothing (every call of the tenant)."""
    parts = [f"{field}={scope[field]}" for field in ("key", "team", "model") if scope.get(field) is not None]
    return ", ".join(parts) or "tenant"


def _rule_limits(rule: dict[str, Any]) -> str:
    parts = []
    if rule.get("requests_per_minute") is not None:
        parts.append(f"{rule['requests_per_minute']} requests/min")
    if rule.get("tokens_per_minute") is not None:
        parts.append(f"{rule['tokens_per_minute']} tokens/min")
    if rule.get("concurrent") is not None:
        parts.append(f"{rule['concurrent']} concurrent")
    if rule.get("max_tokens") is not None:
        parts.append(f"max_tokens {rule['max_tokens']}")
    if rule.get("max_cost_usd") is not None:
        parts.append(f"at most ${rule['max_cost_usd']:g} a call")
    return ", ".join(parts)


def usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def duration(seconds: float) -> str:
    """``3d 4h``, ``5h 12m``, ``12m``."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[n]) for row in [header, *rows]) for n in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _or_dash(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# --- limits ----------------------------------------------------------------------------------------------


@limits.command("set")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@json_option
@connected
def set_rules(file: str, tenant: str, as_json: bool, client: Client) -> None:
    """Create or replace the rule(s) FILE holds (one rule, or `rules:`); platform admins only."""
    entries = _entries(file, "rule", "rules", "budgets")
    stored = _put_all(client, tenant, file, "limits", "rule", entries)
    if as_json:
        emit_json(stored)
        return
    for rule in stored:
        click.echo(f"limit rule {rule['name']} set for {scope_text(rule['scope'])}: {_rule_limits(rule)}")


@limits.command("list")
@tenant_option
@json_option
@connected
def list_rules(tenant: str, as_json: bool, client: Client) -> None:
    """The tenant's limit rules."""
    found = client.get(tenant_path(tenant, "limits"))
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(f"tenant {tenant} has no limit rules")
        return
    rows = [
        [
            r["name"],
            scope_text(r["scope"]),
            _or_dash(r["requests_per_minute"]),
            _or_dash(r["tokens_per_minute"]),
            _or_dash(r["concurrent"]),
            _or_dash(r["max_tokens"]),
            "-" if r["max_cost_usd"] is None else f"${r['max_cost_usd']:g}",
            r["updated_by"],
        ]
        for r in found
    ]
    table(["NAME", "SCOPE", "REQ/MIN", "TOKENS/MIN", "CONCURRENT", "MAX_TOKENS", "MAX_COST", "SET BY"], rows)


@limits.command("delete")
@click.argument("name")
@tenant_option
@connected
def delete_rule(name: str, tenant: str, client: Client) -> None:
    """Delete the limit rule NAME; platform admins only."""
    deleted = client.delete(tenant_path(tenant, "limits", name))
    click.echo(f"deleted limit rule {deleted['name']} of tenant {tenant}")


# --- budgets ---------------------------------------------------------------------------------------------


def _budget_line(budget: dict[str, Any]) -> str:
    soft = budget["soft_ratio"]
    alert = f", alert at {soft:.0%}" if soft is not None else ", no alert"
    return f"{usd(budget['amount_usd'])} a {budget['period']}{alert}"


@budgets.command("set")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@json_option
@connected
def set_budgets(file: str, tenant: str, as_json: bool, client: Client) -> None:
    """Create or replace the budget(s) FILE holds (one budget, or `budgets:`); platform admins only."""
    entries = _entries(file, "budget", "budgets", "rules")
    stored = _put_all(client, tenant, file, "budgets", "budget", entries)
    if as_json:
        emit_json(stored)
        return
    for budget in stored:
        click.echo(f"budget {budget['name']} set for {scope_text(budget['scope'])}: {_budget_line(budget)}")


@budgets.command("list")
@tenant_option
@json_option
@connected
def list_budgets(tenant: str, as_json: bool, client: Client) -> None:
    """The tenant's budgets."""
    found = client.get(tenant_path(tenant, "budgets"))
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(f"tenant {tenant} has no budgets")
        return
    rows = [
        [
            b["name"],
            scope_text(b["scope"]),
            b["period"],
            usd(b["amount_usd"]),
            "-" if b["soft_ratio"] is None else f"{b['soft_ratio']:.0%}",
            b["updated_by"],
        ]
        for b in found
    ]
    table(["NAME", "SCOPE", "PERIOD", "AMOUNT", "SOFT", "SET BY"], rows)


@budgets.command("delete")
@click.argument("name")
@tenant_option
@connected
def delete_budget(name: str, tenant: str, client: Client) -> None:
    """Delete the budget NAME (and the alerts it fired); platform admins only."""
    deleted = client.delete(tenant_path(tenant, "budgets", name))
    click.echo(f"deleted budget {deleted['name']} of tenant {tenant}")


@budgets.command("status")
@tenant_option
@json_option
@connected
def status(tenant: str, as_json: bool, client: Client) -> None:
    """What each budget has spent in its current period, per team or key for `each`, and its alerts."""
    found = client.get(tenant_path(tenant, "budgets", "status"))
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(f"tenant {tenant} has no budgets")
        return
    rows: list[list[str]] = []
    for b in found:
        amount = b["amount_usd"]
        lines = b["spend"] or [{"subject": None, "spent_usd": 0.0, "used": 0.0, "alert_fired_at": None}]
        for line in lines:
            if b["split"] is not None and line["subject"] is not None:
                scope = f"{b['split']}={line['subject']}"
            else:
                scope = scope_text(b["scope"])
            if b["soft_ratio"] is None:
                alert = "-"
            elif line["alert_fired_at"]:
                alert = "fired " + datetime.fromisoformat(line["alert_fired_at"]).strftime("%Y-%m-%d %H:%MZ")
            else:
                alert = "no"
            rows.append(
                [
                    b["name"],
                    scope,
                    b["period"],
                    f"{usd(line['spent_usd'])} / {usd(amount)}",
                    f"{line['used']:.1%}",
                    alert,
                    duration(b["resets_in_s"]),
                ]
            )
    table(["BUDGET", "SCOPE", "PERIOD", "SPENT / AMOUNT", "USED", "SOFT ALERT", "RESETS IN"], rows)
