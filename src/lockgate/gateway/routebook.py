"""The route book: every release a gateway may serve, compiled and held in memory.

For each (tenant, route, environment) the book holds the current release and the one before it, both
compiled (sandboxed templates, variable and output validators), so a rollback is a pointer swap with
nothing to load. The book is rebuilt off the request path when the ``routes`` change version moves and
swapped in atomically; compiled releases are reused across rebuilds, keyed by their content id.

A release that cannot be compiled (content stored before it was validated at creation, a bad schema)
never takes routing down: it is skipped and reported (logged, counted in
``lockgate_releases_unservable``), its environment keeps serving what it served before, and every other
route is unaffected. Templates render in the bounded sandbox (``control.templating``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import TemplateError
from sqlalchemy import Engine, select

from lockgate.control.release_content import ReleaseContent
from lockgate.control.templating import BoundedTemplate, compile_template
from lockgate.errors import InvalidRequest
from lockgate.store import versions
from lockgate.store.tables import releases, rollouts, route_pointers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContractViolation:
    path: str
    message: str


class ServingRelease:
    """One release, compiled for serving."""

    def __init__(self, release_id: str, content: ReleaseContent) -> None:
        self.id = release_id
        self.content = content
        self.templates: list[tuple[str, BoundedTemplate]] = [
            (m["role"], compile_template(m["content"])) for m in content.prompt.messages
        ]
        # On first use: jsonschema costs the server about 10 MB where no release is served.
        import jsonschema
        from jsonschema.exceptions import best_match

        self._best_match = best_match
        variables = content.prompt.variables or {"type": "object"}
        jsonschema.Draft202012Validator.check_schema(variables)
        self.variables = jsonschema.Draft202012Validator(variables)
        contract = content.output_contract
        if contract is not None:
            jsonschema.Draft202012Validator.check_schema(contract)
        self.contract = jsonschema.Draft202012Validator(contract) if contract is not None else None
        self.headers = {
            "x-lockgate-release": release_id,
            "x-lockgate-prompt": f"{content.prompt.name}@{content.prompt.version}",
            "x-lockgate-model": f"{content.model.name}:{content.model.version}",
        }

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        error = self._best_match(self.variables.iter_errors(dict(variables)))
        if error is not None:
            where = "variables" + "".join(
                f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path
            )
            raise InvalidRequest(f"Invalid {where}: {error.message}", param=where, code="invalid_variables")
        try:
            return [
                {"role": role, "content": template.render(variables)} for role, template in self.templates
            ]
        except TemplateError as exc:
            raise InvalidRequest(f"The prompt could not be rendered: {exc}", param="variables") from None

    def check_output(self, text: str) -> ContractViolation | None:
        if self.contract is None:
            return None
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return ContractViolation("$", "the answer is not valid JSON")
        error = self._best_match(self.contract.iter_errors(document))
        if error is None:
            return None
        return ContractViolation(error.json_path, error.message)


@dataclass(frozen=True, slots=True)
class OnlineQuality:
    """The rollout spec's ``analysis.online_quality``: which share of live answers is scored, and how."""

    sample: float
    """Fraction (0..1) of answers scored, chosen by a hash of the request id."""
    scorers: tuple[dict[str, Any], ...]
    """Scorer specs, as a dataset stores them (built by the observer, never by the gateway)."""


@dataclass(frozen=True, slots=True)
class LiveRollout:
    """A rollout under way in one environment: who gets the candidate, and how."""

    id: str
    strategy: str
    candidate: ServingRelease
    share: float
    """Fraction of subjects (0..1) sent to the candidate, or mirrored to it for ``shadow``."""
    salt: str
    online: OnlineQuality | None = None
    """Live answers to score, when the spec asks for online quality."""

    @property
    def mirrors(self) -> bool:
        return self.strategy == "shadow"


@dataclass(frozen=True, slots=True)
class RouteEntry:
    current: ServingRelease
    previous: ServingRelease | None
    rollout: LiveRollout | None = None


class RouteBook:
    def __init__(self, on_unservable: Callable[[int], None] = lambda _: None) -> None:
        self._entries: dict[tuple[str, str, str], RouteEntry] = {}
        self._rollouts: dict[str, LiveRollout] = {}
        self._compiled: dict[str, ServingRelease] = {}
        self._on_unservable = on_unservable
        self.unservable: dict[str, str] = {}
        """Release id -> why it cannot be served."""
        self.version = -1

    def lookup(self, tenant_id: str, route: str, environment: str) -> RouteEntry | None:
        return self._entries.get((tenant_id, route, environment))

    def rollout(self, rollout_id: str) -> LiveRollout | None:
        """The live rollout of that id, wherever it runs (a mirrored call knows only the id)."""
        return self._rollouts.get(rollout_id)

    def load(self, engine: Engine) -> None:
        with engine.connect() as connection:
            version = versions.current(connection, versions.ROUTES)
            pointers = connection.execute(select(route_pointers)).all()
            live = connection.execute(
                select(rollouts).where(rollouts.c.status.in_(("running", "paused")))
            ).all()
            wanted = (
                {p.release_id for p in pointers}
                | {p.previous_release_id for p in pointers if p.previous_release_id}
                | {r.candidate_release_id for r in live}
            )
            # Release content never changes: one that failed to compile is not tried again.
            missing = wanted - set(self._compiled) - set(self.unservable)
            specs = (
                connection.execute(
                    select(releases.c.id, releases.c.spec).where(releases.c.id.in_(missing))
                ).all()
                if missing
                else []
            )
        compiled = {rid: self._compiled[rid] for rid in wanted if rid in self._compiled}
        unservable = {rid: why for rid, why in self.unservable.items() if rid in wanted}
        for row in specs:
            try:
                compiled[row.id] = ServingRelease(row.id, ReleaseContent.model_validate(row.spec))
            except Exception as exc:
                unservable[row.id] = f"{type(exc).__name__}: {exc}"[:500]
                log.error("release %s cannot be served and is skipped: %s", row.id, unservable[row.id])
        by_environment = {(r.tenant_id, r.route, r.environment): r for r in live}
        entries: dict[tuple[str, str, str], RouteEntry] = {}
        for p in pointers:
            key = (p.tenant_id, p.route, p.environment)
            current = compiled.get(p.release_id)
            if current is None:
                # Keep serving what this environment served before, if this worker had it.
                if key in self._entries:
                    entries[key] = self._entries[key]
                continue
            previous = compiled.get(p.previous_release_id) if p.previous_release_id else None
            entries[key] = RouteEntry(current, previous, _live(by_environment.get(key), current, compiled))
        self._entries = entries
        self._rollouts = {e.rollout.id: e.rollout for e in entries.values() if e.rollout is not None}
        self._compiled = compiled
        self.unservable = unservable
        self._on_unservable(len(unservable))
        self.version = version


def _live(row: Any, current: ServingRelease, compiled: Mapping[str, ServingRelease]) -> LiveRollout | None:
    """The rollout of an environment, if it is still about the release the environment serves."""
    if row is None or row.baseline_release_id != current.id:
        return None
    candidate = compiled.get(row.candidate_release_id)
    if candidate is None:
        return None  # an unservable candidate gets no traffic
    return LiveRollout(
        row.id, row.strategy, candidate, float(row.candidate_share), row.salt, _online(row.spec)
    )


def _online(spec: Any) -> OnlineQuality | None:
    """``analysis.online_quality`` of a stored rollout spec (validated when the strategy was set)."""
    analysis = spec.get("analysis") if isinstance(spec, dict) else None
    online = analysis.get("online_quality") if isinstance(analysis, dict) else None
    if not isinstance(online, dict) or not online.get("scorers"):
        return None
    sample = float(online.get("sample", 0.1))
    return OnlineQuality(sample, tuple(dict(s) for s in online["scorers"])) if sample > 0 else None
