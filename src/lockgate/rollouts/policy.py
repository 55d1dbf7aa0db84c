"""The Rego policy that decides a rollout analysis: the shipped default, extended or replaced per route.

It is evaluated by the same engine as the promotion gates (``gates.policy``), in package
``lockgate.rollout``; ``decision`` must be ``{"verdict": "pass"|"fail"|"inconclusive", "failing": [...],
"reasons": [...]}``. The input is documented at the top of ``policies/analysis.rego``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from lockgate.gates.policy import PolicySet, evaluate_package
from lockgate.service_errors import Invalid

PACKAGE = "lockgate.rollout"
DEFAULT_MODULE = "analysis.rego"
DEFAULT_POLICY: str = files("lockgate.rollouts.policies").joinpath(DEFAULT_MODULE).read_text(encoding="utf-8")
VERDICTS = ("pass", "fail", "inconclusive")


def analysis_policies(extra: Mapping[str, str], *, replace: bool = False) -> PolicySet:
    if replace:
        if not extra:
            raise Invalid("replace_default_policy needs at least one policy module of your own")
        return PolicySet(dict(extra))
    if DEFAULT_MODULE in extra:
        raise Invalid(f"policy module {DEFAULT_MODULE}: the name is the default policy's; rename it")
    return PolicySet({DEFAULT_MODULE: DEFAULT_POLICY, **extra})


def decide(policies: PolicySet, document: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    """(verdict, failing metrics, reasons); a policy that cannot decide holds the stage (inconclusive)."""
    try:
        decision = evaluate_package(policies.modules, f"{PACKAGE}.decision", document)
    except Invalid as exc:
        return "inconclusive", [], [f"the analysis policy could not be evaluated: {exc.message}"]
    if not isinstance(decision, dict) or decision.get("verdict") not in VERDICTS:
        return "inconclusive", [], [f"the analysis policy answered {decision!r}, not a decision"]
    failing = [str(m) for m in decision.get("failing") or []]
    reasons = [str(r) for r in decision.get("reasons") or []]
    return str(decision["verdict"]), failing, reasons
