"""Gate decisions as Rego policy: evaluate, check and test the policies that allow or deny a promotion.

The gate service builds one input document per promotion (release, environment, baseline release,
thresholds, per-dataset candidate and baseline metrics, comparisons and the list of missing eval runs)
and asks the policies in package ``lockgate.gate`` for a decision. Policies run in-process with regopy
(the rego-cpp engine) or, where a route names one, on an external OPA server through its Data API.

Writing policies:

- The default policy (``gate.rego``, shipped as ``DEFAULT_POLICY``) denies on a quality drop beyond the
  allowed one, quality under ``min_quality``, a safety failure rate over the allowed one, p95 latency
  over budget and every missing eval run; it warns on a cost rise beyond the allowed one.
- To extend it, add modules in the same package (``PolicySet.default(extra={...})``): every
  ``deny contains msg if {...}`` or ``warn contains msg if {...}`` rule they define joins the decision.
- To replace it (``PolicySet.default(extra={...}, replace=True)``), the modules must still define, in
  package ``lockgate.gate``, either ``decision`` (an object with a boolean ``allow`` and optional
  ``deny``/``warn`` message sets) or at least a ``deny`` set (then ``warn`` and ``allow`` are optional).

A gate fails closed: a policy that does not parse, errors at evaluation (built-in errors are strict, so
a division by zero is an error, not an undefined value), leaves the package undefined or returns a
malformed decision raises ``Invalid`` and the promotion is refused; so does an OPA server that cannot be
reached or answers badly. ``allow`` is never true while a deny message stands, whatever ``decision`` says.

Tests follow ``opa test``: every top-level rule named ``test_*`` in a test module must be true. Test
modules set the input key by key (``gate.decision with input.datasets as [...] with input.thresholds
as {...}``); rego-cpp 1.5.2 cannot evaluate ``with input as {...}`` (the whole input at once) once the
policy applies a built-in or an operator to an input value, and reports a compiler error instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from lockgate.security.audit import canonical
from lockgate.service_errors import Invalid

PACKAGE = "lockgate.gate"
DEFAULT_MODULE = "gate.rego"
DEFAULT_POLICY: str = files("lockgate.gates.policies").joinpath(DEFAULT_MODULE).read_text(encoding="utf-8")
DEFAULT_TESTS: str = files("lockgate.gates.policies").joinpath("gate_test.rego").read_text(encoding="utf-8")

_WHOLE_INPUT_HINT = (
    " (rego-cpp cannot replace the whole input here: write `with input.<key> as ...` for each key instead)"
)
_PACKAGE_LINE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w*)\b", re.MULTILINE)
_ERROR_BLOCK = re.compile(rb"\(error(?=\s)")
_ERROR_FILE = re.compile(rb" (\d+):")
_ERROR_OFFSET = re.compile(rb"\|(\d+)\|")
_ERROR_MESSAGE = re.compile(rb"\(errormsg (\d+):")


@dataclass(frozen=True)
class Decision:
    """A gate's verdict: ``allow`` only when ``deny`` is empty; messages are sorted."""

    allow: bool
    deny: list[str]
    warn: list[str]
    policy_sha256: str
    engine: str


@dataclass(frozen=True)
class PolicyTestResult:
    """One ``test_*`` rule: ``name`` is ``package.rule``; ``error`` is set when evaluating it failed."""

    name: str
    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class PolicySet:
    """The Rego modules a gate evaluates, by file name. ``sha256`` identifies them in evidence."""

    modules: dict[str, str]

    def __post_init__(self) -> None:
        if not self.modules:
            raise Invalid("policy modules: at least one Rego module is needed")
        for name, source in self.modules.items():
            if not name.strip():
                raise Invalid("policy modules: a module name is empty")
            if not source.strip():
                raise Invalid(f"policy module {name}: the source is empty")

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON of the modules (sorted by name), stable across orderings."""
        return hashlib.sha256(canonical(self.modules).encode()).hexdigest()

    @classmethod
    def default(cls, extra: Mapping[str, str] | None = None, replace: bool = False) -> PolicySet:
        """The default policy plus ``extra`` modules, or ``extra`` alone when ``replace`` is set."""
        extra = dict(extra or {})
        if replace:
            if not extra:
                raise Invalid("policy modules: replacing the default policy needs at least one module")
            return cls(extra)
        if DEFAULT_MODULE in extra:
            raise Invalid(
                f"policy module {DEFAULT_MODULE}: the name is the default policy's; "
                "rename the module to extend the policy, or replace the default policy"
            )
        return cls({DEFAULT_MODULE: DEFAULT_POLICY, **extra})


def evaluate(
    policies: PolicySet, input: Mapping[str, Any], data: Mapping[str, Any] | None = None
) -> Decision:
    """Decide in-process with regopy. Raises ``Invalid`` (the gate denies) when the policy is broken."""
    interpreter = _interpreter(policies.modules)
    if data is not None:
        _call(partial(interpreter.add_data_json, _json(data, "data")), "data is invalid", policies.modules)
    _call(partial(interpreter.set_input_term, _json(input, "input")), "input is invalid", policies.modules)
    values = _query(interpreter, f"data.{PACKAGE}", policies.modules)
    allow, deny, warn = _verdict(values[0] if values else None, "policy")
    return Decision(allow, deny, warn, policies.sha256, "regopy")


def evaluate_package(modules: Mapping[str, str], package: str, input: Mapping[str, Any]) -> Any:
    """The value of ``data.<package>`` for ``input`` (None when undefined), in-process with regopy; a
    broken policy raises ``Invalid``. Rollout analyses use it with their own package."""
    interpreter = _interpreter(modules)
    _call(partial(interpreter.set_input_term, _json(input, "input")), "input is invalid", modules)
    values = _query(interpreter, f"data.{package}", modules)
    return values[0] if values else None


def evaluate_remote(
    opa_url: str, input: Mapping[str, Any], policy_sha256: str = "", timeout: float = 5.0
) -> Decision:
    """Decide on an OPA server (``POST {opa_url}/v1/data/lockgate/gate``); any failure raises ``Invalid``."""
    url = f"{opa_url.rstrip('/')}/v1/data/{PACKAGE.replace('.', '/')}"
    if urlsplit(url).scheme not in {"http", "https"}:
        raise Invalid(f"opa_url must be an http:// or https:// URL, got {opa_url!r}")
    body = json.dumps({"input": input}, allow_nan=False).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    source = f"OPA at {opa_url}"
    answer = _post(request, timeout, source)
    if not isinstance(answer, dict):
        raise Invalid(f"{source} answered {answer!r}, not an object; the gate denies")
    allow, deny, warn = _verdict(answer.get("result"), source)
    return Decision(allow, deny, warn, policy_sha256, f"opa:{opa_url}")


def check(policies: PolicySet) -> None:
    """Parse the modules and evaluate the package without input; raise ``Invalid`` with the engine's errors.

    rego-cpp reports some errors (an unknown function, conflicting values) only when a rule runs, so
    errors that need a particular input to show still surface at evaluation, where the gate denies.
    """
    interpreter = _interpreter(policies.modules)
    if not _query(interpreter, f"data.{PACKAGE}", policies.modules):
        raise Invalid(f"policy: package {PACKAGE} is undefined; the modules must define its rules")


def check_package(policies: PolicySet, package: str = PACKAGE) -> None:
    """Like ``check``, for any package (a rollout's analysis policy is ``lockgate.rollout``)."""
    interpreter = _interpreter(policies.modules)
    if not _query(interpreter, f"data.{package}", policies.modules):
        raise Invalid(f"policy: package {package} is undefined; the modules must define its rules")


def run_tests(policies: PolicySet, tests: Mapping[str, str]) -> list[PolicyTestResult]:
    """Run every top-level ``test_*`` rule of ``tests``; a test passes when its rule is defined and true."""
    clashes = sorted(policies.modules.keys() & tests.keys())
    if clashes:
        raise Invalid(f"policy test modules {', '.join(clashes)}: the names are already policy modules")
    modules = {**policies.modules, **tests}
    interpreter = _interpreter(modules)
    return [_run_test(interpreter, rule, modules) for rule in _test_rules(tests)]


def _run_test(interpreter: Any, rule: str, modules: Mapping[str, str]) -> PolicyTestResult:
    try:
        values = _query(interpreter, f"data.{rule}", modules)
    except Invalid as error:
        return PolicyTestResult(rule, passed=False, error=error.message)
    return PolicyTestResult(rule, passed=values == [True])


def _test_rules(tests: Mapping[str, str]) -> list[str]:
    """``package.rule`` of each ``test_*`` rule head at the start of a line, once each, in file order."""
    rules: dict[str, None] = {}
    for name, source in tests.items():
        package = _PACKAGE_LINE.search(source)
        if package is None:
            raise Invalid(f"policy test module {name}: no package declaration")
        for rule in _TEST_RULE.findall(source):
            rules[f"{package.group(1)}.{rule}"] = None
    return list(rules)


def _interpreter(modules: Mapping[str, str]) -> Any:
    # regopy is imported on first use: the server starts without it and most processes never decide.
    from regopy import Interpreter, LogLevel

    interpreter = Interpreter()
    interpreter.log_level = LogLevel.NONE
    interpreter.strict_built_in_errors = True
    for name, source in sorted(modules.items()):
        _call(partial(interpreter.add_module, name, source), "does not parse", modules)
    return interpreter


def _call(action: Callable[[], object], failure: str, modules: Mapping[str, str]) -> None:
    from regopy import RegoError

    try:
        action()
    except RegoError as error:
        raise Invalid(f"policy {failure}: {_describe(str(error), modules)}") from None


def _query(interpreter: Any, query: str, modules: Mapping[str, str]) -> list[Any]:
    """The query's values (empty when undefined). rego-cpp reports errors three ways, all made ``Invalid``.

    Parse errors raise ``RegoError``; some evaluation errors come back as an output whose text is an
    error tree instead of JSON; the rest as a failed output, described either by the interpreter's last
    error or by the output's error nodes (whose text must not be read when the interpreter has one).
    """
    from regopy import RegoError

    try:
        output = interpreter.query(query)
    except RegoError as error:
        raise Invalid(f"policy does not compile: {_describe(str(error), modules)}") from None
    except json.JSONDecodeError as error:
        raise Invalid(f"policy failed evaluating {query}: {_describe(error.doc, modules)}") from None
    if not output.ok():
        raise Invalid(f"policy failed evaluating {query}: {_output_error(interpreter, output, modules)}")
    results = output.results
    return list(results[0].expressions) if results else []


def _output_error(interpreter: Any, output: Any, modules: Mapping[str, str]) -> str:
    from regopy.rego_shared import rego_get_error

    message = str(rego_get_error(interpreter._impl))
    if message:
        hint = _WHOLE_INPUT_HINT if "rego-localref" in message else ""
        return message + hint
    errors = output.node()
    described = (_describe(str(errors.at(index).json()), modules) for index in range(len(errors)))
    return "; ".join(dict.fromkeys(described))


def _describe(text: str, modules: Mapping[str, str]) -> str:
    """Turn rego-cpp's error trees into distinct ``file:line:column: message`` texts joined by ``; ``."""
    raw = text.encode()
    described = [_describe_block(raw, block.end(), modules) for block in _ERROR_BLOCK.finditer(raw)]
    return "; ".join(dict.fromkeys(message for message in described if message)) or text.strip()


def _describe_block(raw: bytes, start: int, modules: Mapping[str, str]) -> str:
    message = _ERROR_MESSAGE.search(raw, start)
    if message is None:
        return ""
    length = int(message.group(1))
    text = raw[message.end() : message.end() + length].decode(errors="replace")
    location = _location(raw, start, modules)
    return f"{location}: {text}" if location else text


def _location(raw: bytes, start: int, modules: Mapping[str, str]) -> str:
    """``file:line:column`` from a block head like `` 6:m.rego|34|1`` (length-prefixed name, byte offset)."""
    head = _ERROR_FILE.match(raw, start)
    if head is None:
        return ""
    name_end = head.end() + int(head.group(1))
    name = raw[head.end() : name_end].decode(errors="replace")
    offset = _ERROR_OFFSET.match(raw, name_end)
    if name not in modules or offset is None:
        return name
    before = modules[name].encode()[: int(offset.group(1))]
    line = before.count(b"\n") + 1
    column = len(before) - (before.rfind(b"\n") + 1) + 1
    return f"{name}:{line}:{column}"


def _json(value: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise Invalid(f"gate {what} is not a JSON document: {error}") from None


def _verdict(document: Any, source: str) -> tuple[bool, list[str], list[str]]:
    """``(allow, deny, warn)`` from the package document: its ``decision``, else its deny/warn sets."""
    if not isinstance(document, dict):
        raise Invalid(f"{source}: package {PACKAGE} is undefined, so the gate denies")
    if "decision" in document:
        decision = document["decision"]
        if not isinstance(decision, dict):
            raise Invalid(f"{source}: {PACKAGE}.decision must be an object, got {decision!r}")
        allow = decision.get("allow")
        if not isinstance(allow, bool):
            raise Invalid(f"{source}: {PACKAGE}.decision.allow must be true or false, got {allow!r}")
        deny = _messages(decision.get("deny", []), "decision.deny", source)
        warn = _messages(decision.get("warn", []), "decision.warn", source)
        return allow and not deny, deny, warn
    if "deny" not in document:
        raise Invalid(f"{source}: {PACKAGE} defines neither decision nor deny, so the gate denies")
    deny = _messages(document["deny"], "deny", source)
    warn = _messages(document.get("warn", []), "warn", source)
    allow = document.get("allow", True)
    if not isinstance(allow, bool):
        raise Invalid(f"{source}: {PACKAGE}.allow must be true or false, got {allow!r}")
    return allow and not deny, deny, warn


def _messages(value: Any, field: str, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Invalid(f"{source}: {PACKAGE}.{field} must be a set of strings, got {value!r}")
    return sorted(value)


def _post(request: urllib.request.Request, timeout: float, source: str) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked scheme
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise Invalid(f"{source} answered HTTP {error.code}: {_opa_error(error)}; the gate denies") from None
    except urllib.error.URLError as error:
        raise Invalid(f"{source} is unreachable ({error.reason}); the gate denies") from None
    except TimeoutError:
        raise Invalid(f"{source} did not answer within {timeout:g}s; the gate denies") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid(f"{source} answered with something that is not JSON; the gate denies") from None


def _opa_error(error: urllib.error.HTTPError) -> str:
    """OPA's ``{"code", "message"}`` error body, or the raw body when it is not one."""
    body = error.read().decode(errors="replace")
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        return body.strip() or str(error.reason)
    return str(document.get("message", body)) if isinstance(document, dict) else body
