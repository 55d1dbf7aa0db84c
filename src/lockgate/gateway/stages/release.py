"""Serve a route: ``model: "route:support-answer"`` runs the release its environment points at.

The environment is the API key's when the key is pinned to one (a header naming another is refused),
else the ``x-lockgate-environment`` header, else prod. The release's model and fallbacks must be
allowed for the key and its tenant (``Principal.may_route_to``). The release's prompt is rendered with
the caller's variables (top-level ``variables``, or ``metadata.variables`` as an object or a JSON
string), its parameters replace the client's, and its model and fallbacks are used. The answer must
satisfy the release's output contract: a violation is a 502 naming the schema path, counted in
``lockgate_output_contract_violations_total``. Every answer carries headers naming the release, the
prompt version and the model.

During a rollout of the environment, each call is assigned an arm by its subject's bucket
(``gateway.assignment``): a canary, A/B or bandit call below the candidate's share is served by the
candidate (``x-lockgate-arm`` says which); a shadow rollout serves every call from the current release
and mirrors the chosen share to the candidate (``gateway.mirror``). The arm goes into the request log.

When the rollout's spec asks for online quality, every answer of the rollout that reached its caller in
full and within its contract (a complete body, or a stream that ended) is handed to the ``AnswerObserver``
the server installed, mirrored calls included. The observer decides (by the request id) whether to score
it and does so off the request path; the gateway never waits on it and never imports the scorers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from lockgate.errors import GatewayError, InvalidRequest, ModelNotFound, PermissionDenied
from lockgate.gateway.assignment import bucket, subject
from lockgate.gateway.mirror import Mirror
from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.gateway.routebook import LiveRollout, RouteBook, ServingRelease
from lockgate.ops.metrics import GatewayMetrics
from lockgate.wire import ChatCompletionRequest, prompt_variables, validate

PREFIX = "route:"
DEFAULT_ENVIRONMENT = "prod"
ENVIRONMENTS = ("dev", "stage", "prod")


class OutputContractViolation(GatewayError):
    status = 502
    type = "api_error"
    default_code = "output_contract_violation"
    output: str = ""


class AnswerObserver(Protocol):
    """Told of each complete answer of a call that belongs to a rollout with online quality settings.

    Called on the event loop, after the answer passed the release's contract: it must return at once
    (schedule any work of its own) and must not raise.
    """

    def answered(self, call: Call, release: ServingRelease, rollout: LiveRollout, text: str) -> None: ...


class ResolveRelease:
    def __init__(
        self, book: RouteBook, metrics: GatewayMetrics, mirror: Mirror, observer: AnswerObserver | None = None
    ) -> None:
        self._book = book
        self._metrics = metrics
        self._mirror = mirror
        self.observer = observer
        """Set by the server (online quality scoring); None: nobody is told."""

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        if not call.model.startswith(PREFIX) or not isinstance(call.request, ChatCompletionRequest):
            return await call_next(call)
        principal = call.principal
        assert principal is not None, "authentication runs first"
        route = call.model[len(PREFIX) :]
        if not principal.may_use(call.model):
            raise PermissionDenied(f"This API key may not use the route '{route}'.", param="model")
        release = call.release  # pinned by an in-process caller (eval runner, mirror), else looked up
        announce = False  # name the arm in the answer (canary, A/B, bandit; never shadow)
        if release is None:
            environment = _environment(call.environment, principal.environment)
            entry = self._book.lookup(principal.tenant_id, route, environment)
            if entry is None:
                raise ModelNotFound(f"The route '{route}' has no release in {environment}.", param="model")
            release = entry.current
            if entry.rollout is not None:
                release = self._assign(call, entry.rollout, release)
                announce = not entry.rollout.mirrors
            call.release = release
        for model in (release.content.model.gateway_model, *release.content.fallbacks):
            if not principal.may_route_to(model):
                raise PermissionDenied(
                    f"The release of route '{route}' uses the model '{model}', which this key may not use.",
                    param="model",
                )
        call.route_name = route
        call.body, call.variables = _rendered_body(call.body, release)
        call.request = validate(call.body, ChatCompletionRequest)
        call.fallbacks = tuple(release.content.fallbacks)
        reply = await call_next(call)
        reply.headers.update(release.headers)
        if announce and call.arm is not None:
            reply.headers["x-lockgate-arm"] = call.arm
        if reply.stream is not None:
            reply.stream = self._check_stream(call, release, route, reply.stream)
        elif reply.body is not None:
            choices = reply.body.get("choices") or ()
            texts = [str((c.get("message") or {}).get("content") or "") for c in choices]
            for text in texts:
                self._check(release, route, text)
            self._observe(call, release, texts[0] if texts else "")
        return reply

    def _observe(self, call: Call, release: ServingRelease, text: str) -> None:
        if call.rollout_id is None or self.observer is None:
            return
        rollout = self._book.rollout(call.rollout_id)
        if rollout is not None and rollout.online is not None:
            self.observer.answered(call, release, rollout, text)

    def _assign(self, call: Call, rollout: LiveRollout, current: ServingRelease) -> ServingRelease:
        chosen = bucket(rollout.salt, subject(call.chat.user, call.session, call.request_id)) < rollout.share
        call.rollout_id = rollout.id
        if rollout.mirrors:
            call.arm = "baseline"  # what the client gets is the comparison for the mirrored calls
            if chosen:
                self._mirror.send(call, call.body, rollout.candidate, rollout.id)
            return current
        call.arm = "candidate" if chosen else "baseline"
        return rollout.candidate if chosen else current

    def _check(self, release: ServingRelease, route: str, text: str) -> None:
        violation = release.check_output(text)
        if violation is not None:
            self._metrics.contract_violations.labels(route).inc()
            error = OutputContractViolation(
                f"The answer violates the output contract of release {release.id} at {violation.path}: "
                f"{violation.message}",
                param=violation.path,
            )
            error.output = text  # for in-process callers (eval reports); never sent to the client
            raise error

    async def _check_stream(
        self, call: Call, release: ServingRelease, route: str, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        text: list[str] = []
        first: list[str] = []  # the first choice's text, for the observer
        async for chunk in chunks:
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content") or ""
                text.append(content)
                if not choice.get("index"):
                    first.append(content)
            yield chunk
        self._check(release, route, "".join(text))
        self._observe(call, release, "".join(first))


def _environment(requested: str | None, pinned: str | None) -> str:
    if pinned is not None:
        if requested is not None and requested != pinned:
            raise PermissionDenied(
                f"This API key is pinned to the {pinned} environment; it may not call {requested}.",
                param="x-lockgate-environment",
                code="environment_not_allowed",
            )
        return pinned
    if requested is not None and requested not in ENVIRONMENTS:
        raise InvalidRequest(
            "x-lockgate-environment must be dev, stage or prod.", param="x-lockgate-environment"
        )
    return requested or DEFAULT_ENVIRONMENT


def _rendered_body(body: dict[str, Any], release: ServingRelease) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body sent upstream, with the release's prompt rendered, and the caller's variables."""
    rendered = dict(body)
    variables = prompt_variables(rendered)
    rendered.pop("variables", None)
    metadata = rendered.get("metadata")
    if isinstance(metadata, dict) and "variables" in metadata:
        # The prompt's input, not the upstream's metadata.
        rendered["metadata"] = {k: v for k, v in metadata.items() if k != "variables"} or None
        if rendered["metadata"] is None:
            del rendered["metadata"]
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise InvalidRequest("variables must be a JSON object.", param="variables", code="invalid_type")
    conversation = rendered.get("messages") or []
    rendered["messages"] = [*release.render(variables), *conversation]
    rendered.update(release.content.parameters)
    rendered["model"] = release.content.model.gateway_model
    return rendered, variables
