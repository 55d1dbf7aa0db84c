"""``lockgate eval run|status|cancel|list|report|gate``: evals that run on the server.

``eval run`` asks the server to run every case of a dataset through a release, with the server's own
gateway, and follows the run with a progress bar. Ctrl-C only detaches: the run goes on (follow it again
with ``eval status RUN --follow``, stop it with ``eval cancel RUN``). A run the server was executing
when it stopped resumes when it starts again; ``eval run`` with the same release and dataset follows
that run instead of starting another.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client
from lockgate.cli.options import connected, emit_json, json_option, tenant_option, tenant_path, when

DETACHED = 130
POLL = 0.5
NAMES = {"json": "report.json", "html": "report.html", "junit": "junit.xml"}


@click.group("eval")
def eval_group() -> None:
    """Run evals of releases on the server and ask a route's gate."""


@eval_group.command("run")
@click.option("--release", "release_id", required=True, help="The release to evaluate.")
@click.option("--dataset", "dataset_ref", required=True, help="name or name@version.")
@click.option(
    "--repeat", "repeats", default=1, show_default=True, type=click.IntRange(1, 20), help="Runs per case."
)
@click.option(
    "--concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Cases in flight."
)
@click.option("--fresh", is_flag=True, help="Start a new run even if this one is unfinished on the server.")
@click.option(
    "--against",
    type=click.Choice(["dev", "stage", "prod"]),
    default=None,
    help="Compare with the release this environment serves.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="eval-reports",
    show_default=True,
    help="Where to write the JSON, HTML and JUnit reports.",
)
@click.option("--detach", is_flag=True, help="Queue the run and return at once.")
@tenant_option
@connected
def run(
    release_id: str,
    dataset_ref: str,
    repeats: int,
    concurrency: int,
    fresh: bool,
    against: str | None,
    output: str,
    detach: bool,
    tenant: str,
    client: Client,
) -> None:
    """Run every case of a dataset through a release on the server, then write the reports."""
    body = {
        "release": release_id,
        "dataset": dataset_ref,
        "repeats": repeats,
        "concurrency": concurrency,
        "fresh": fresh,
        "against": against,
    }
    started = client.post(tenant_path(tenant, "eval-runs"), body)
    verb = "following" if started["done"] or started["status"] == "running" else "queued"
    click.echo(
        f"{verb} {started['id']}: release {started['release']} on {started['dataset']} "
        f"({started['done']}/{started['total']} done, {repeats} repeat(s))",
        err=True,
    )
    if detach:
        click.echo(started["id"])
        return
    finished = follow(client, tenant, started)
    print_finished(client, tenant, finished, Path(output))


@eval_group.command("status")
@click.argument("run_id")
@click.option(
    "--follow", "follow_run", is_flag=True, help="Follow the run until it ends, then write its reports."
)
@click.option("--output", type=click.Path(file_okay=False), default="eval-reports", show_default=True)
@tenant_option
@json_option
@connected
def status(run_id: str, follow_run: bool, output: str, tenant: str, as_json: bool, client: Client) -> None:
    """Where a run stands: status, progress, and its summary once complete."""
    found = client.get(tenant_path(tenant, "eval-runs", run_id))
    if follow_run:
        print_finished(client, tenant, follow(client, tenant, found), Path(output))
        return
    if as_json:
        emit_json(found)
        return
    click.echo(f"{found['id']}  {found['status']}  {found['done']}/{found['total']} recorded")
    click.echo(f"  release {found['release']} on {found['dataset']}, started {when(found['started_at'])}")
    if found["error"]:
        click.echo(f"  error: {found['error']}")
    if found["summary"]:
        s = found["summary"]
        click.echo(
            f"  quality {s['quality']:.3f}  pass rate {s['pass_rate']:.3f}  "
            f"fingerprint {found['fingerprint']}"
        )


@eval_group.command("cancel")
@click.argument("run_id")
@tenant_option
@connected
def cancel(run_id: str, tenant: str, client: Client) -> None:
    """Stop a queued or running run: no new case starts; what finished stays recorded."""
    answer = client.post(tenant_path(tenant, "eval-runs", run_id, "cancel"))
    click.echo(f"{run_id} is {answer['status']} ({answer['done']}/{answer['total']} recorded)")


@eval_group.command("list")
@click.option("--release", "release_id", default=None)
@tenant_option
@json_option
@connected
def list_runs(release_id: str | None, tenant: str, as_json: bool, client: Client) -> None:
    """Eval runs, newest first."""
    runs = client.get(tenant_path(tenant, "eval-runs"), release=release_id)
    if as_json:
        emit_json(runs)
        return
    for r in runs:
        summary = r["summary"] or {}
        quality = f"quality {summary['quality']:.3f}" if "quality" in summary else ""
        click.echo(
            f"{r['id']}  {r['status']:<10} {r['release']}  {r['dataset'] or ''}  x{r['repeats']}  "
            f"{when(r['started_at'])}  {quality}"
        )


@eval_group.command("report")
@click.argument("run_id")
@click.option("--format", "format_", type=click.Choice(["json", "html", "junit"]), default="json")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@tenant_option
@connected
def report(run_id: str, format_: str, output: str | None, tenant: str, client: Client) -> None:
    """Print (or write) a stored report of a finished run."""
    stored = client.get(tenant_path(tenant, "eval-runs", run_id, "reports", format_))
    if output:
        Path(output).write_text(stored["content"], encoding="utf-8")
        click.echo(f"{output}  sha256 {stored['sha256']}")
    else:
        click.echo(stored["content"])


@eval_group.command("gate")
@click.option("--release", "release_id", required=True)
@click.option("--env", "environment", required=True, type=click.Choice(["dev", "stage", "prod"]))
@click.option("--run-missing", is_flag=True, help="First have the server run the evals the gate lacks.")
@tenant_option
@json_option
@connected
def gate(
    release_id: str, environment: str, run_missing: bool, tenant: str, as_json: bool, client: Client
) -> None:
    """Ask the route's gate whether RELEASE may enter ENV; exit 0 if allowed, 1 if not."""
    path = tenant_path(tenant, "releases", release_id, "gate")
    result = client.get(path, environment=environment)
    if run_missing and result["missing_runs"]:
        for missing in result["missing_runs"]:
            body = {"release": missing["release"], "dataset": missing["dataset"]}
            started = client.post(tenant_path(tenant, "eval-runs"), body)
            click.echo(f"running {missing['dataset']} on {missing['release']} ({started['id']})", err=True)
            follow(client, tenant, started)
        result = client.get(path, environment=environment)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{'ALLOW' if result['allow'] else 'DENY'}: release {release_id} -> {environment}")
        for reason in result["deny"]:
            click.echo(f"  deny: {reason}")
        for warning in result["warn"]:
            click.echo(f"  warn: {warning}")
        if result["gated"]:
            click.echo(f"  policy {result['policy_sha256'][:16]} evaluated by {result['engine']}")
    sys.exit(0 if result["allow"] else 1)


def follow(client: Client, tenant: str, run: dict[str, Any]) -> dict[str, Any]:
    """Poll the run with a progress bar until it ends; Ctrl-C detaches (exit 130), the run goes on."""
    path = tenant_path(tenant, "eval-runs", run["id"])
    try:
        with click.progressbar(
            length=run["total"], label="cases", file=sys.stderr, show_pos=True, show_eta=True
        ) as bar:
            shown = 0
            while True:
                bar.update(run["done"] - shown)
                shown = run["done"]
                if run["status"] not in ("queued", "running", "cancelling"):
                    break
                time.sleep(POLL)
                run = client.get(path)
    except KeyboardInterrupt:
        click.echo(
            f"\ndetached: {run['id']} goes on on the server; follow it with "
            f"`lockgate eval status {run['id']} --follow`, stop it with `lockgate eval cancel {run['id']}`",
            err=True,
        )
        sys.exit(DETACHED)
    if run["status"] != "complete":
        detail = f": {run['error']}" if run.get("error") else ""
        raise click.ClickException(
            f"run {run['id']} ended {run['status']} ({run['done']}/{run['total']} recorded){detail}"
        )
    return run


def print_finished(client: Client, tenant: str, run: dict[str, Any], output: Path) -> None:
    s = run["summary"]
    click.echo(f"run {run['id']} complete: {s['cases']} cases x {run['repeats']}")
    click.echo(
        f"  quality {s['quality']:.3f}  pass rate {s['pass_rate']:.3f}  "
        f"safety failures {s['safety_failures']}  errors {s['error_rate']:.3f}"
    )
    click.echo(
        f"  latency p50 {s['latency_p50_ms']:.0f} ms  p95 {s['latency_p95_ms']:.0f} ms  "
        f"cost per 1k ${s['cost_per_1k_usd']:.4f}"
    )
    for metric, stat in (s.get("repeat_stats") or {}).items():
        click.echo(
            f"  {metric} over {run['repeats']} repeats: {stat['mean']:.3f} "
            f"(95% CI {stat['low']:.3f} to {stat['high']:.3f})"
        )
    names = ", ".join(d["name"] for d in run["deployments"]) or "-"
    click.echo(f"  answered by {names}; deployments fingerprint {run['fingerprint']}")
    directory = output / run["id"]
    directory.mkdir(parents=True, exist_ok=True)
    for format_, name in NAMES.items():
        stored = client.get(tenant_path(tenant, "eval-runs", run["id"], "reports", format_))
        if format_ == "json":
            _print_baseline(stored["content"])
        path = directory / name
        path.write_text(stored["content"], encoding="utf-8")
        click.echo(f"  {path}  sha256 {stored['sha256']}")


def _print_baseline(report_json: str) -> None:
    import orjson

    baseline = orjson.loads(report_json).get("baseline")
    if not baseline:
        return
    c = baseline["comparison"]
    q = c["quality"]
    click.echo(
        f"  vs {baseline['release_id']}: quality {q['delta']:+.3f} "
        f"[{q['ci_low']:+.3f}, {q['ci_high']:+.3f}], "
        f"McNemar p={c['pass_rate']['mcnemar_p']:.3g}"
    )
