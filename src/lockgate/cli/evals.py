"""``lockgate eval run|gate|list|report``: run a release on a dataset, and ask a route's gate.

``eval run`` builds the gateway from the same configuration ``lockgate serve`` uses and runs every case
through its pipeline in this process: no server needs to be running. The first Ctrl-C stops starting
new cases, lets the ones in flight finish and be recorded, and exits 130; the same command resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from lockgate.cli.common import data_dir_option, emit_json, fail_with_problems, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.config.loader import ConfigError
from lockgate.control.plane import ControlPlane
from lockgate.evals.cases import CaseResult, ScoringContext
from lockgate.evals.client import PipelineClient
from lockgate.evals.scorers.embedding import LocalEmbedder
from lockgate.evals.service import Finished, Planned
from lockgate.gateway.asgi import CONFIG_ENV
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance, load_config, open_instance

INTERRUPTED = 130

tenant_option = click.option("--tenant", default="default", show_default=True)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    envvar=CONFIG_ENV,
    help="The gateway configuration the release runs on (as for `lockgate serve`); default: embedded.",
)


@click.group("eval")
def eval_group() -> None:
    """Run evals of releases and evaluate promotion gates."""


@eval_group.command("run")
@click.option("--release", "release_id", required=True, help="The release to evaluate.")
@click.option("--dataset", "dataset_ref", required=True, help="name or name@version.")
@click.option("--repeat", "repeats", default=1, show_default=True, type=int, help="Runs per case.")
@click.option("--concurrency", default=4, show_default=True, type=int, help="Cases in flight at once.")
@click.option("--fresh", is_flag=True, help="Start a new run instead of resuming an unfinished one.")
@click.option("--against", default=None, help="Compare with the release this environment serves (e.g. prod).")
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="eval-reports",
    show_default=True,
    help="Directory for the JSON, HTML and JUnit reports.",
)
@config_option
@tenant_option
@data_dir_option
@token_option
@control_errors
def run(
    release_id: str,
    dataset_ref: str,
    repeats: int,
    concurrency: int,
    fresh: bool,
    against: str | None,
    output: str,
    config_path: str | None,
    tenant: str,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Run every case of a dataset through a release, score it and write the reports."""
    instance = open_instance(data_dir)
    control = instance.control()
    actor = actor_for(instance, token)
    planned = control.evals.prepare(
        actor, tenant, release_id, dataset_ref, repeats=repeats, concurrency=concurrency, fresh=fresh
    )
    verb = "resuming" if planned.resumed else "starting"
    click.echo(
        f"{verb} {planned.run.id}: release {planned.release.id} on {planned.dataset.ref} "
        f"({planned.done}/{planned.total} done, {repeats} repeat(s), concurrency {concurrency})",
        err=True,
    )
    if planned.todo and not _execute(instance, control, planned, config_path, tenant, concurrency):
        done = len(control.evals.store.done(planned.run.id))
        click.echo(
            f"interrupted: {done} of {planned.total} recorded in {planned.run.id}; "
            "run the same command again to resume",
            err=True,
        )
        sys.exit(INTERRUPTED)
    finished = control.evals.finalize(tenant, planned.run.id, against)
    _print_finished(finished, Path(output))


@eval_group.command("gate")
@click.option("--release", "release_id", required=True)
@click.option("--env", "environment", required=True, type=click.Choice(["dev", "stage", "prod"]))
@click.option("--run-missing", is_flag=True, help="First run the evals the gate needs and lacks.")
@click.option("--json", "as_json", is_flag=True)
@config_option
@tenant_option
@data_dir_option
@token_option
@control_errors
def gate(
    release_id: str,
    environment: str,
    run_missing: bool,
    as_json: bool,
    config_path: str | None,
    tenant: str,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Ask the route's gate whether RELEASE may enter ENV; exit 0 if allowed, 1 if not."""
    instance = open_instance(data_dir)
    control = instance.control()
    actor = actor_for(instance, token)
    if run_missing:
        for missing_release, dataset_ref in control.gates.missing_runs(tenant, release_id, environment):
            planned = control.evals.prepare(actor, tenant, missing_release, dataset_ref)
            click.echo(f"running {dataset_ref} on {missing_release} ({planned.run.id})", err=True)
            if planned.todo and not _execute(instance, control, planned, config_path, tenant, 4):
                sys.exit(INTERRUPTED)
            control.evals.finalize(tenant, planned.run.id)
    result = control.gates.evaluate(tenant, release_id, environment)
    decision = result.decision
    if as_json:
        emit_json(
            {
                "allow": decision.allow,
                "deny": decision.deny,
                "warn": decision.warn,
                "policy_sha256": decision.policy_sha256,
                "engine": decision.engine,
                "input": result.input,
            }
        )
    else:
        verdict = "ALLOW" if decision.allow else "DENY"
        click.echo(f"{verdict}: release {release_id} -> {environment}")
        for reason in decision.deny:
            click.echo(f"  deny: {reason}")
        for warning in decision.warn:
            click.echo(f"  warn: {warning}")
        if result.gated:
            click.echo(f"  policy {decision.policy_sha256[:16]} evaluated by {decision.engine}")
    sys.exit(0 if decision.allow else 1)


@eval_group.command("list")
@click.option("--release", "release_id", default=None)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def list_runs(release_id: str | None, as_json: bool, data_dir: str | None) -> None:
    """Eval runs, newest first."""
    control = open_instance(data_dir).control()
    runs = control.evals.store.runs(release_id)
    if as_json:
        emit_json([_run_row(r) for r in runs])
        return
    for r in runs:
        summary = r.summary or {}
        quality = f"quality {summary['quality']:.3f}" if "quality" in summary else ""
        click.echo(
            f"{r.id}  {r.status:<11} {r.release_id}  {r.settings.get('dataset', '')}  "
            f"x{r.repeats}  {when(r.started_at)}  {quality}"
        )


@eval_group.command("report")
@click.argument("run_id")
@click.option("--format", "format_", type=click.Choice(["json", "html", "junit"]), default="json")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@data_dir_option
@control_errors
def report(run_id: str, format_: str, output: str | None, data_dir: str | None) -> None:
    """Print (or write) a stored report of a finished run."""
    control = open_instance(data_dir).control()
    for stored in control.evals.store.reports(run_id):
        if stored.format == format_:
            if output:
                Path(output).write_text(stored.content, encoding="utf-8")
                click.echo(f"{output}  sha256 {stored.sha256}")
            else:
                click.echo(stored.content)
            return
    raise click.ClickException(f"run {run_id} has no {format_} report (is it finished?)")


def _execute(
    instance: Instance,
    control: ControlPlane,
    planned: Planned,
    config_path: str | None,
    tenant: str,
    concurrency: int,
) -> bool:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail_with_problems(exc)
    tenant_id = control.tenants.get(tenant).id
    return asyncio.run(_run_async(instance, control, planned, config, tenant_id, tenant, concurrency))


async def _run_async(
    instance: Instance,
    control: ControlPlane,
    planned: Planned,
    config: Any,
    tenant_id: str,
    tenant: str,
    concurrency: int,
) -> bool:
    gateway = Gateway(config, instance.engine, instance.pepper)
    await gateway.start()
    client = PipelineClient(gateway, tenant_id, tenant)
    local = LocalEmbedder()

    async def embed(model: str | None, texts: Any) -> list[list[float]]:
        return await (local(None, texts) if model is None else client.embed(model, texts))

    context = ScoringContext(complete=client.complete, embed=embed)
    stop = asyncio.Event()
    try:
        with _first_interrupt_stops(stop), _progress(planned) as advance:
            return await control.evals.execute(
                planned, client, context, stop, concurrency=concurrency, on_result=advance
            )
    finally:
        local.close()
        await gateway.stop()


@contextlib.contextmanager
def _first_interrupt_stops(stop: asyncio.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish what is in flight, start nothing new. Second: stop at once."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        click.echo("\nstopping: finishing the cases in flight (Ctrl-C again to abort them)", err=True)
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _progress(planned: Planned) -> Iterator[Any]:
    with click.progressbar(
        length=planned.total, label="cases", file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:
        bar.update(planned.done)

        def advance(_: CaseResult) -> None:
            bar.update(1)

        yield advance


def _print_finished(finished: Finished, output: Path) -> None:
    directory = output / finished.run.id
    directory.mkdir(parents=True, exist_ok=True)
    names = {"json": "report.json", "html": "report.html", "junit": "junit.xml"}
    s = finished.summary
    click.echo(f"run {finished.run.id} complete: {s['cases']} cases x {finished.run.repeats}")
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
            f"  {metric} over {finished.run.repeats} repeats: {stat['mean']:.3f} "
            f"(95% CI {stat['low']:.3f} to {stat['high']:.3f})"
        )
    if finished.baseline is not None:
        c = finished.baseline["comparison"]
        q = c["quality"]
        click.echo(
            f"  vs {finished.baseline['release_id']} ({finished.against}): quality "
            f"{q['delta']:+.3f} [{q['ci_low']:+.3f}, {q['ci_high']:+.3f}], "
            f"McNemar p={c['pass_rate']['mcnemar_p']:.3g}"
        )
    for file in finished.reports:
        path = directory / names.get(file.format, file.format)
        path.write_text(file.content, encoding="utf-8")
        click.echo(f"  {path}  sha256 {file.sha256}")


def _run_row(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "release": run.release_id,
        "dataset": run.settings.get("dataset"),
        "repeats": run.repeats,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "summary": run.summary,
    }
