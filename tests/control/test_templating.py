import threading
import time
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2 import StrictUndefined, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from lockgate.control.templating import (
    RenderLimitExceeded,
    TemplateLimits,
    TemplateRejected,
    check_template,
    compile_template,
    template_variables,
)

PLAIN = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

DOCS = [
    {"title": "Refunds", "text": "  Refunds take 5 days.  ", "score": 0.4, "tags": ["billing"]},
    {"title": "Shipping", "text": "Ships in 2 days.", "score": 0.9, "tags": []},
]

ORDINARY = [
    ("Hello {{ name }}!\n", {"name": "Ann"}),
    (
        "{% if admin %}admin{% elif name %}user {{ name }}{% else %}guest{% endif %}",
        {"admin": False, "name": "x"},
    ),
    (
        "{% for doc in docs %}[{{ loop.index }}/{{ loop.length }}] {{ doc.title|upper }}: {{ doc.text|trim }}"
        "{% if not loop.last %}\n{% endif %}{% else %}no documents{% endfor %}\n",
        {"docs": DOCS},
    ),
    ("{% for doc in docs %}{% endfor %}{% for x in [] %}{% else %}empty{% endfor %}", {"docs": DOCS}),
    (
        "{{ tags|join(', ') }} | {{ meta|tojson }} | {{ meta|tojson(indent=2) }}"
        " | {{ missing|default('n/a') }} | {{ '  padded  '|trim }} | {{ title|title }}"
        " | {{ text|truncate(12) }} | {{ text|wordcount }}",
        {
            "tags": ["a", "b"],
            "meta": {"k": [1, "<b>"], "n": None},
            "title": "hello world",
            "text": "a b c " * 5,
        },
    ),
    ("line one   \n  {%- if x %}\n   kept {{ x }}  {%- endif %}  \n\n", {"x": 1}),
    ("{%- for x in xs -%}\n  {{ x }}\n{%- endfor %}\n\n", {"xs": [1, 2, 3]}),
    (
        "{% set ns = namespace(total=0) %}{% for k, v in prices.items() %}{% set ns.total = ns.total + v %}"
        "{{ k ~ '=' ~ v }};{% endfor %} total={{ ns.total }} {{ '%05.1f' % 3.14159 }}"
        " {{ '%(a)s-%(b)d' % d }}",
        {"prices": {"x": 1, "y": 2.5}, "d": {"a": "A", "b": 7}},
    ),
    (
        "{{ 'a,b, c'.split(',') }} {{ ' x '.strip() }} {{ 'abc'.replace('b', 'B') }} {{ 'x'.upper() }}"
        " {{ [1, 2] + [3] }} {{ (1, 2) }} {{ {'a': 1} }} {{ 2 ** 10 }} {{ 'ab' * 3 }}"
        " {{ 7 // 2 }} {{ -3 % 5 }}",
        {},
    ),
    (
        "{% filter upper %}hi {{ n }}{% endfilter %}{% set b %}block {{ n }}{% endset %}{{ b }}"
        "{{ range(5)|batch(2, 0)|list }}{{ range(5)|slice(2)|list }}{{ xs|map('upper')|join }}"
        "{{ xs|reverse|join }}{{ xs|sort|first }}{{ range(10)|sum }}{{ 3.14159|round(2) }}"
        "{{ 2.5|round(0, 'floor') }}{{ 'abc'|replace('b', 'x') }}{{ xs|unique|list|length }}",
        {"n": 1, "xs": ["b", "a", "a"]},
    ),
    (
        "{% for doc in docs|sort(attribute='score', reverse=true) %}{{ doc.title }}{% endfor %}"
        " {{ docs|map(attribute='title')|join('/') }}"
        " {{ docs|selectattr('tags')|map(attribute='title')|list }}"
        " {{ docs|rejectattr('tags')|list|length }} {{ docs|sum(attribute='score') }} {{ d|dictsort }}"
        " {{ d|items|list }} {{ docs|max(attribute='score') }} {{ [3, 1, 2]|min }} {{ '42'|int + 1 }}"
        " {{ '1.5'|float }} {{ -3|abs }} {{ 'a&b'|e }} {{ '<p>x</p>'|striptags }} {{ 'a b'|urlencode }}"
        " {{ 'x'|capitalize }}{{ 'ABC'|lower }} {{ xs|count }} {{ xs|last }} {{ 5|string }}",
        {"docs": DOCS, "d": {"b": 2, "a": 1}, "xs": [1, 2]},
    ),
    (
        "{% for x in xs if x %}{{ loop.cycle('odd', 'even') }}:{{ x }}"
        "{% if loop.changed(x) %}!{% endif %} {% endfor %}"
        "{% with y = 2 %}{{ y }}{% endwith %}{{ xs is sequence }} {{ 4 is divisibleby 2 }} {{ 'b' in xs }}"
        " {{ dict(a=1) }} {{ range(3)|list }} {{ x if x is defined else 'undef' }} {{ xs[1:] }}",
        {"xs": ["b", "", "a", "a"]},
    ),
    ("{# a comment #}{% raw %}{{ not rendered }}{% endraw %}\n", {}),
]


@pytest.mark.parametrize(("source", "variables"), ORDINARY)
def test_ordinary_templates_render_like_the_plain_sandbox(source: str, variables: dict[str, Any]) -> None:
    check_template(source)
    expected = PLAIN.from_string(source).render(variables)
    assert compile_template(source).render(variables) == expected


def test_a_compiled_template_renders_many_times_with_different_variables() -> None:
    template = compile_template("{% for x in xs %}{{ x }},{% endfor %}")
    assert template.render({"xs": [1, 2]}) == "1,2,"
    assert template.render({"xs": []}) == ""
    assert template.render({"xs": "ab"}) == "a,b,"


def test_a_missing_variable_raises_undefined_error() -> None:
    with pytest.raises(UndefinedError, match="'name' is undefined"):
        compile_template("Hello {{ name }}").render({})
    with pytest.raises(UndefinedError):
        compile_template("{% for x in items %}{{ x }}{% endfor %}").render({})
    with pytest.raises(UndefinedError):
        compile_template("{{ helper() }}").render({})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__init__.__globals__ }}",
        "{{ ''.format.__globals__ }}",
    ],
)
def test_python_internals_are_out_of_reach(source: str) -> None:
    with pytest.raises(SecurityError):
        compile_template(source).render({"x": object()})


@pytest.mark.parametrize(
    ("source", "construct"),
    [
        ("{{ 'x'|center(10**9) }}", "filter 'center'"),
        ("{{ x|indent(10**9) }}", "filter 'indent'"),
        ("{{ x|wordwrap(1) }}", "filter 'wordwrap'"),
        ("{{ '%s'|format(x) }}", "filter 'format'"),
        ("{{ x|pprint }}", "filter 'pprint'"),
        ("{{ xs|random }}", "filter 'random'"),
        ("{{ ['x']|map('center', 10**9)|list }}", "filter 'center' (through map)"),
        ("{% filter center(10**9) %}x{% endfilter %}", "filter 'center'"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro"),
        ("{% for x in xs recursive %}{{ loop(xs) }}{% endfor %}", "recursive for loop"),
        ("{% include 'other.txt' %}", "include"),
        ("{% import 'other.txt' as other %}", "import"),
        ("{% from 'other.txt' import thing %}", "from-import"),
        ("{% extends 'base.txt' %}", "extends"),
        ("{% block body %}x{% endblock %}", "block"),
        ("{% call thing() %}x{% endcall %}", "call block"),
        ("{{ lipsum(10**6) }}", "global 'lipsum'"),
        ("{% set c = cycler(1, 2) %}", "global 'cycler'"),
        ("{% autoescape true %}{{ x }}{% endautoescape %}", "autoescape block"),
    ],
)
def test_check_template_refuses_constructs_and_names_them(source: str, construct: str) -> None:
    with pytest.raises(TemplateRejected) as refused:
        check_template(source)
    assert str(refused.value) == f"line 1: {construct} is not allowed in prompt templates"
    with pytest.raises(TemplateRejected):
        compile_template(source)


def test_rejections_name_the_line() -> None:
    with pytest.raises(TemplateRejected) as refused:
        check_template("Hello\n{{ name }}\n{{ name|center(80) }}\n")
    assert str(refused.value) == "line 3: filter 'center' is not allowed in prompt templates"
    assert refused.value.lineno == 3


def test_a_syntax_error_is_a_rejection_with_its_line() -> None:
    with pytest.raises(TemplateRejected, match=r"^line 2: ") as refused:
        check_template("fine\n{% if %}\n")
    assert refused.value.lineno == 2
    with pytest.raises(TemplateRejected, match="line 1: Unexpected end of template"):
        compile_template("{% for x in xs %}")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ x|nosuchfilter }}", "line 1: there is no filter named 'nosuchfilter'"),
        ("{{ x is nosuchtest }}", "line 1: there is no test named 'nosuchtest'"),
        ("{{ __lockgate_budget }}", "line 1: the name '__lockgate_budget' is reserved"),
        ("{% set __lockgate_loop = 1 %}", "line 1: the name '__lockgate_loop' is reserved"),
        ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "the template is nested too deeply"),
    ],
)
def test_other_rejections(source: str, message: str) -> None:
    with pytest.raises(TemplateRejected) as refused:
        check_template(source)
    assert str(refused.value) == message


def _render_bounded(source: str, variables: dict[str, Any] | None = None) -> tuple[BaseException, float]:
    """The exception that stopped ``source`` and how long compiling and rendering took."""
    started = time.perf_counter()
    with pytest.raises((TemplateRejected, RenderLimitExceeded, SecurityError)) as stopped:
        compile_template(source).render(variables or {})
    return stopped.value, time.perf_counter() - started


BOMBS = [
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
        RenderLimitExceeded,
        id="nested-range-loops",
    ),
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        RenderLimitExceeded,
        id="nested-range-loops-no-output",
    ),
    pytest.param(
        "{% set ns = namespace(n=0) %}{% for item in items %}"
        "{% set ns.n = ns.n + (item|string|upper|replace('1', 'one')|length) %}{% endfor %}{{ ns.n }}",
        RenderLimitExceeded,
        id="huge-list-expensive-body",
    ),
    pytest.param("{{ 'a' * 10**9 }}", RenderLimitExceeded, id="str-repeat"),
    pytest.param("{{ 10**9 * 'a' }}", RenderLimitExceeded, id="str-repeat-reversed"),
    pytest.param("{{ [1] * 10**9 }}", RenderLimitExceeded, id="list-repeat"),
    pytest.param("{{ [''] * 10**9 }}", RenderLimitExceeded, id="list-of-empty-repeat"),
    # Jinja's ** is left-associative, so 2 ** 10 ** 8 would be (2 ** 10) ** 8.
    pytest.param("{{ 2 ** (10 ** 8) }}", RenderLimitExceeded, id="huge-power"),
    pytest.param(
        "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
        RenderLimitExceeded,
        id="repeated-squaring",
    ),
    pytest.param("{{ 'x'|center(10**9) }}", TemplateRejected, id="center"),
    pytest.param("{{ ''.ljust(10**9) }}", SecurityError, id="ljust"),
    pytest.param("{{ 'x'.zfill(10**9) }}", SecurityError, id="zfill"),
    pytest.param("{{ '{:>999999999}'.format(1) }}", SecurityError, id="str-format"),
    pytest.param("{{ '%999999999d' % 1 }}", RenderLimitExceeded, id="percent-format-width"),
    pytest.param("{{ '%.999999999f' % 1.0 }}", RenderLimitExceeded, id="percent-format-precision"),
    pytest.param("{{ '%*d' % (999999999, 1) }}", SecurityError, id="percent-format-star"),
    pytest.param("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", TemplateRejected, id="recursive-macro"),
    pytest.param(
        "{% for x in xs recursive %}{{ loop(xs) }}{% endfor %}", TemplateRejected, id="recursive-for"
    ),
    pytest.param("{% for x in [1] %}{{ loop([1]) }}{% endfor %}", SecurityError, id="loop-call"),
    pytest.param("{% include 'x.txt' %}", TemplateRejected, id="include"),
    pytest.param("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", RenderLimitExceeded, id="big-output"),
    pytest.param(
        "{% set s %}{% for i in range(100000) %}xxxxxxxxxx{% endfor %}{% endset %}{{ s|length }}",
        RenderLimitExceeded,
        id="big-captured-output",
    ),
    pytest.param(
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        RenderLimitExceeded,
        id="doubling-concat",
    ),
    pytest.param(
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        RenderLimitExceeded,
        id="doubling-plus",
    ),
    pytest.param(
        "{% set a = ['xxxxxxxxxx', 'xxxxxxxxxx'] %}"
        + "".join("{% set a = [a, a, a, a] %}" for _ in range(16))
        + "{{ a|string|length }}",
        RenderLimitExceeded,
        id="shared-nested-lists",
    ),
    pytest.param(
        "{% set ns = namespace(a=1) %}{% for i in range(100) %}{% set ns.a = namespace(p=ns, q=ns) %}"
        "{% endfor %}{{ ns }}",
        RenderLimitExceeded,
        id="self-referencing-namespaces",
    ),
    pytest.param(
        "{{ range(100000)|select('in', ['x'] * 100000)|list }}", RenderLimitExceeded, id="quadratic-select"
    ),
    pytest.param(
        "{% for i in range(100000) if i in ['x'] * 100000 %}{% endfor %}",
        RenderLimitExceeded,
        id="quadratic-loop-filter",
    ),
    pytest.param("{{ range(100000)|join('x' * 100000) }}", RenderLimitExceeded, id="join-separator"),
    pytest.param("{{ 'abc'|replace('', 'x' * 100000) }}", RenderLimitExceeded, id="replace-filter"),
    pytest.param("{{ 'abc'.replace('', 'x' * 100000) }}", RenderLimitExceeded, id="replace-method"),
    pytest.param("{{ [1]|batch(10**9, 'x')|list|length }}", RenderLimitExceeded, id="batch-fill"),
    pytest.param("{{ [1]|slice(10**9)|list|length }}", RenderLimitExceeded, id="slice-count"),
    pytest.param("{{ range(100000)|list|tojson(indent=100) }}", RenderLimitExceeded, id="tojson-indent"),
    pytest.param("{{ 1.5|round(10**8, 'ceil') }}", RenderLimitExceeded, id="round-precision"),
    pytest.param("{{ ([[1]] * 1000)|sum(start=[]) }}", SecurityError, id="sum-of-lists"),
    pytest.param("{{ dict.fromkeys(range(100000), 'x' * 100000) }}", SecurityError, id="dict-fromkeys"),
]


@pytest.mark.parametrize(("source", "stopped_by"), BOMBS)
def test_bombs_are_stopped_quickly(source: str, stopped_by: type[BaseException]) -> None:
    stopped, elapsed = _render_bounded(source, {"items": list(range(1_000_000)), "xs": [1, 2]})
    assert isinstance(stopped, stopped_by), repr(stopped)
    # Unbounded, each of these runs for minutes or exhausts memory; bounded, it stops within its 50 ms
    # budget plus one step. The margin is for a loaded CI machine, not a speed target.
    assert elapsed < 5.0


def test_limit_messages_name_the_bound() -> None:
    loops = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderLimitExceeded, match=r"max_iterations \(100000\)"):
        compile_template(loops, TemplateLimits(max_seconds=60)).render({})
    with pytest.raises(RenderLimitExceeded, match=r"max_seconds \(0\.001s\)"):
        compile_template(loops, TemplateLimits(max_seconds=0.001, max_iterations=10**9)).render({})
    with pytest.raises(RenderLimitExceeded, match=r"max_output_chars \(10\)"):
        compile_template("{{ text }}", TemplateLimits(max_output_chars=10)).render({"text": "x" * 11})
    with pytest.raises(RenderLimitExceeded, match="max_output_chars plus the size of the variables"):
        compile_template("{{ ('a' * 10**9)|length }}").render({})
    with pytest.raises(RenderLimitExceeded, match=r"integer size limit \(4096 bits\)"):
        compile_template("{{ 2 ** 5000 }}").render({})


def test_limits_are_per_template() -> None:
    source = "{% for x in range(n) %}x{% endfor %}"
    small = compile_template(source, TemplateLimits(max_iterations=5))
    assert small.render({"n": 5}) == "xxxxx"
    with pytest.raises(RenderLimitExceeded):
        small.render({"n": 6})
    assert compile_template(source).render({"n": 6}) == "xxxxxx"
    assert small.limits == TemplateLimits(max_iterations=5)


def test_the_output_bound_allows_exactly_max_output_chars() -> None:
    template = compile_template("{{ text }}\n", TemplateLimits(max_output_chars=11))
    assert template.render({"text": "x" * 10}) == "x" * 10 + "\n"
    with pytest.raises(RenderLimitExceeded):
        template.render({"text": "x" * 11})


def test_large_variables_can_still_be_reordered_and_sliced() -> None:
    docs = [{"text": "x" * 1_000, "score": i % 7} for i in range(400)]
    source = "{% for d in (docs|sort(attribute='score'))[:2] %}{{ d.score }}{% endfor %}"
    assert compile_template(source).render({"docs": docs}) == PLAIN.from_string(source).render(docs=docs)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_seconds": 0},
        {"max_seconds": -1.0},
        {"max_output_chars": 0},
        {"max_iterations": 0},
    ],
)
def test_limits_must_be_positive(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TemplateLimits(**limits)


def test_a_render_after_a_stopped_render_starts_with_a_fresh_budget() -> None:
    template = compile_template("{% for x in range(n) %}{% endfor %}done", TemplateLimits(max_iterations=10))
    with pytest.raises(RenderLimitExceeded):
        template.render({"n": 11})
    assert template.render({"n": 10}) == "done"


def test_concurrent_renders_each_get_their_own_budget() -> None:
    # Each thread alone stays within its own limits; the small one would fail if it were charged
    # for the big one's iterations or output.
    big = compile_template(
        "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{{ i % 10 }}{% endfor %}",
        TemplateLimits(max_seconds=30, max_iterations=100_000, max_output_chars=1_000),
    )
    small = compile_template(
        "{% for i in range(n) %}{{ i % 10 }}{% endfor %}",
        TemplateLimits(max_seconds=30, max_iterations=1_000, max_output_chars=1_000),
    )
    start = threading.Barrier(2)
    results: dict[str, list[str]] = {"big": [], "small": []}
    errors: list[BaseException] = []

    def run(name: str, render: Callable[[], str]) -> None:
        try:
            start.wait()
            for _ in range(10):
                results[name].append(render())
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("big", lambda: big.render({}))),
        threading.Thread(target=run, args=("small", lambda: small.render({"n": 1_000}))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert results["big"] == ["0123456789" * 30] * 10
    assert results["small"] == ["0123456789" * 100] * 10


def test_template_variables_are_the_undeclared_names() -> None:
    source = (
        "{% set greeting = 'hi' %}{{ greeting }} {{ user.name }}"
        "{% for doc in docs %}{{ loop.index }}{{ doc }}{{ range(3)|list }}{% endfor %}"
        "{% set ns = namespace(n=limit) %}{{ dict(a=extra) }}"
    )
    assert template_variables(source) == {"user", "docs", "limit", "extra"}
    assert template_variables("static text") == set()
    with pytest.raises(TemplateRejected, match="line 1"):
        template_variables("{{ unclosed")


def test_render_limit_exceeded_is_a_template_error() -> None:
    assert issubclass(RenderLimitExceeded, jinja2.TemplateError)
    assert issubclass(TemplateRejected, ValueError)
