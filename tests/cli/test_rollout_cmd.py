"""``lockgate rollout`` as people use it: an admin sets a strategy from a file, a deployer's promotion
starts a rollout, everyone reads its status, deployers steer it, and ``status --watch`` follows the
server's controller until it promotes or rolls back the candidate.

The whole server runs in-thread on the stub upstream (gateway, control API, eval worker and rollout
controller); route calls go through the gateway with the official openai SDK, so each arm's answers,
headers and request-log rows are the real ones. The stub answers ``reply:<text>`` with ``<text>``, so
each release's prompt makes its answers recognisable: ``{"answer": "... #<patch>"}``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from lockgate.config.loader import LoadedConfig
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.releases import ReleaseRequest
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.control.test_golden_path import ROUTE, card, gates_optional
from tests.support.cli import Cli
from tests.support.gateway import RunningGateway
from tests.support.people import token_of

LOCKGATE = str(Path(sys.executable).parent / "lockgate")
VARIABLES = {"product": "lockgate", "question": "Where is my invoice?"}
# Latency on the in-thread stub is a few milliseconds of noise: these tests judge errors and contracts.
CALM = {"max_p95_latency_ratio": 1000.0, "max_cost_ratio": 10.0}


@pytest.fixture
def config() -> LoadedConfig:
    return gates_optional()  # this module is about rollouts; tests/gates covers what a gate adds


def prompt(patch: int, *, keeps_contract: bool = True) -> PromptSpec:
    """Prompt 1.0.<patch>: its answers say ``#<patch>``; one that breaks the contract answers plain text."""
    text = "{{ question }} #" + str(patch)
    user = 'reply:{"answer": "' + text + '"}' if keeps_contract else text
    return PromptSpec.model_validate(
        {
            "name": ROUTE,
            "version": f"1.0.{patch}",
            "messages": [
                {"role": "system", "content": "You answer questions about {{ product }}."},
                {"role": "user", "content": user},
            ],
            "variables": {
                "type": "object",
                "properties": {"product": {"type": "string"}, "question": {"type": "string"}},
                "required": ["product", "question"],
            },
            "settings": {"model": "support-llm@champion", "temperature": 0.1, "max_tokens": 64},
            "output_schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        }
    )


@dataclass
class Team:
    """erin builds releases, april approves them, dan deploys, vic reads; each with their own token."""

    services: Services
    cli: Cli
    server: RunningGateway
    tmp: Path
    tokens: dict[str, str]
    actors: dict[str, Actor]

    def as_(self, name: str) -> Cli:
        return self.cli.as_(self.tokens[name])

    def release(self, patch: int, *, keeps_contract: bool = True) -> str:
        erin = self.actors["erin"]
        self.services.prompts.push(erin, "default", prompt(patch, keeps_contract=keeps_contract))
        request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.{patch}")
        return self.services.releases.create(erin, "default", request).id

    def to_stage(self, release_id: str) -> None:
        """dev -> stage, and april's approval for prod: what comes before the prod promotion."""
        environments = self.services.environments
        environments.point(self.actors["erin"], "default", ROUTE, "dev", release_id)
        environments.promote(self.actors["dan"], "default", ROUTE, "stage")
        environments.approve(self.actors["april"], "default", release_id, "prod")

    def ship(self, release_id: str) -> None:
        self.to_stage(release_id)
        self.services.environments.promote(self.actors["dan"], "default", ROUTE, "prod")

    def strategy(self, name: str = "canary.yaml", **fields: Any) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump({"route": ROUTE, "environment": "prod", **fields}))
        return path

    def serving(self, environment: str = "prod") -> str:
        return self.services.environments.pointer("default", ROUTE, environment).release_id

    def prod_key(self) -> str:
        return self.cli.ok("keys", "create", "--env", "prod", "--name", "prod app", "-q").stdout.strip()

    def call(self, key: str, user: str) -> tuple[str | None, str]:
        """One route call as an application makes it: (the x-lockgate-arm header, the answer)."""
        client = openai.OpenAI(base_url=self.server.base_url, api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=f"route:{ROUTE}", messages=[], user=user, extra_body={"variables": VARIABLES}
        )
        return raw.headers.get("x-lockgate-arm"), raw.parse().choices[0].message.content or ""

    def answers_after_the_rollout(self, key: str) -> set[tuple[str | None, str]]:
        """What ten customers get once the gateway has seen the rollout end (it polls every 250 ms)."""
        deadline = time.monotonic() + 10
        while self._probe_arm(key) is not None:
            assert time.monotonic() < deadline, "the gateway still splits traffic"
            time.sleep(0.05)
        return {self.call(key, f"customer-{n}") for n in range(10)}

    def _probe_arm(self, key: str) -> str | None:
        try:
            return self.call(key, "probe")[0]
        except openai.InternalServerError:  # a broken candidate's answer: the split has not ended here yet
            return "candidate"

    def watcher(self, *args: str) -> subprocess.Popen[str]:
        """``lockgate rollout status ROUTE --watch`` in its own process, as a deployer's terminal runs it."""
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.tmp),
            "LOCKGATE_URL": self.cli.url,
            "LOCKGATE_TOKEN": self.tokens["dan"],
        }
        command = [LOCKGATE, "rollout", "status", ROUTE, "--env", "prod", "--watch", "--every", "0.2", *args]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
        )


@pytest.fixture
def team(services: Services, admin: Actor, cli: Cli, server: RunningGateway, tmp_path: Path) -> Team:
    people = {
        "erin": (Role.EDITOR,),
        "april": (Role.APPROVER,),
        "dan": (Role.DEPLOYER,),
        "vic": (Role.VIEWER,),
    }
    tokens = {name: token_of(services, admin, name, *roles) for name, roles in people.items()}
    actors = {name: services.tokens.authenticate(token) for name, token in tokens.items()}
    services.registry.register(actors["erin"], "default", card("support-llm"))
    services.registry.set_alias(actors["erin"], "default", "support-llm", "champion", "1")
    return Team(services, cli, server, tmp_path, tokens, actors)


def slow_canary(team: Team) -> Path:
    """A canary the controller will not move on its own during a test: it waits for 1000 requests."""
    return team.strategy(
        strategy="canary",
        canary={"stages": [{"weight": 10, "min_requests": 1000}, {"weight": 50}, {"weight": 100}]},
        analysis={"interval": 1, "min_requests": 1000},
    )


def fast_canary(team: Team) -> Path:
    """Half the subjects on the candidate; promoted once each arm has a few calls and every metric holds."""
    return team.strategy(
        strategy="canary",
        canary={"stages": [{"weight": 50, "min_duration": 1, "min_requests": 4}, {"weight": 100}]},
        analysis={"interval": 1, "min_requests": 4, "thresholds": CALM},
    )


# --- the strategy --------------------------------------------------------------------------------------


def test_only_an_admin_sets_a_strategy_and_everyone_reads_it(team: Team, cli: Cli) -> None:
    (team.tmp / "quiet-hours.rego").write_text(
        "package lockgate.rollout\n\nimport rego.v1\n\nnight if input.stage > 99\n"
    )
    path = team.strategy(
        strategy="canary",
        canary={"stages": [{"weight": 5, "min_duration": 30, "min_requests": 40}, {"weight": 100}]},
        analysis={"interval": 5, "min_requests": 20, "failure_limit": 1},
        policies=["quiet-hours.rego"],
    )
    refused = team.as_("dan").fails("rollout", "set", str(path))
    assert "admin" in refused.output
    team.as_("dan").fails("rollout", "show", ROUTE)  # nothing was set

    done = cli.ok("rollout", "set", str(path))
    assert done.output.strip() == (
        f"rollout strategy of {ROUTE} in prod set: canary 5% (>= 30 s, >= 40 requests per arm) -> 100%; "
        "analysis every 5 s; policy default + quiet-hours.rego"
    )
    shown = team.as_("vic").ok("rollout", "show", ROUTE, "--env", "prod").output
    assert "route support-answer in prod: canary" in shown
    assert "failed analyses tolerated per metric: 1" in shown
    assert "max_error_rate_ratio: 2" in shown  # a default, shown as it applies
    assert "set by admin" in shown
    stored = team.as_("vic").json("rollout", "show", ROUTE)
    assert stored["canary"]["stages"][0] == {"weight": 5.0, "min_duration": 30.0, "min_requests": 40}
    assert set(stored["policies"]) == {"quiet-hours.rego"}
    assert "night if" in team.as_("vic").ok("rollout", "show", ROUTE, "--policy").output
    team.as_("vic").fails("rollout", "show", ROUTE, "--env", "stage")  # prod only


def test_a_broken_strategy_file_is_refused_naming_the_file_and_field(team: Team, cli: Cli) -> None:
    falling = team.strategy(
        "falling.yaml",
        strategy="canary",
        canary={"stages": [{"weight": 50}, {"weight": 10}, {"weight": 100}]},
    )
    refused = cli.fails("rollout", "set", str(falling))
    assert f"{falling}: canary: stage weights must rise" in refused.output
    unknown = team.strategy("typo.yaml", strategy="canary", analysis={"intervall": 3})
    assert f"{unknown}: analysis.intervall" in cli.fails("rollout", "set", str(unknown)).output
    missing = team.strategy("missing.yaml", strategy="canary", policies=["nowhere.rego"])
    assert "policies: cannot read nowhere.rego" in cli.fails("rollout", "set", str(missing)).output
    (team.tmp / "broken.rego").write_text("package lockgate.rollout\n\nfailing contains if {\n")
    broken = team.strategy("broken.yaml", strategy="canary", policies=["broken.rego"])
    unparsable = cli.fails("rollout", "set", str(broken)).output
    assert unparsable.startswith(f"Error: {broken}: policy does not parse: broken.rego:"), unparsable
    (team.tmp / "dev.yaml").write_text(yaml.safe_dump({"route": ROUTE, "environment": "dev"}))
    assert "environment: stage or prod" in cli.fails("rollout", "set", str(team.tmp / "dev.yaml")).output
    cli.fails("rollout", "show", ROUTE)  # nothing was stored


# --- people start and steer rollouts -----------------------------------------------------------------


def test_promote_starts_a_rollout_that_deployers_steer_and_everyone_sees(team: Team, cli: Cli) -> None:
    first, second = team.release(0), team.release(1)
    team.ship(first)
    cli.ok("rollout", "set", str(slow_canary(team)))
    team.to_stage(second)
    dan, vic, erin = team.as_("dan"), team.as_("vic"), team.as_("erin")

    promoted = dan.ok("promote", ROUTE, "--to", "prod").output
    assert f"canary rollout of {second} started on 10%; prod serves {first} until it ends" in promoted
    assert f"lockgate rollout status {ROUTE} --env prod --watch" in promoted
    assert team.serving() == first

    status = vic.ok("rollout", "status", ROUTE).output
    assert f"of {ROUTE} in prod: canary, running" in status
    assert "stage 1 of 3: the candidate serves 10% of users" in status
    assert re.search(rf"candidate\s+{second}\s+0 calls this stage", status), status
    assert re.search(rf"baseline\s+{first}\s+0 calls this stage", status), status
    assert "next decision" in status
    # another promotion while one runs is refused, and says where to look
    again = dan.fails("rollout", "start", ROUTE)
    assert "already has a rollout under way" in again.output

    for event in ("pause", "abort", "promote"):
        refused = erin.fails("rollout", event, ROUTE).output
        assert f"erin may not rollouts.{event} in tenant 'default': it needs deployer" in refused
    paused = dan.ok("rollout", "pause", ROUTE).output
    assert "canary, paused" in paused and "resume with `lockgate rollout resume" in paused
    assert vic.json("rollout", "status", ROUTE)["status"] == "paused"
    assert "canary, running" in dan.ok("rollout", "resume", ROUTE).output
    aborted = dan.ok("rollout", "abort", ROUTE).output
    assert "canary, aborted" in aborted and "abort by dan" in aborted
    assert team.serving() == first

    # watching a rollout that has ended answers at once, with its outcome as the exit code
    watched = vic.fails("rollout", "status", ROUTE, "--watch", code=1)
    assert "canary, aborted" in watched.output

    # the candidate still has its approval: `rollout start` tries again, and dan promotes it by hand
    started = dan.ok("rollout", "start", ROUTE).output
    assert "canary rollout rlt_" in started and f"candidate {second} on 10%, baseline {first}" in started
    promoted_by_hand = dan.ok("rollout", "promote", ROUTE).output
    assert "canary, promoted" in promoted_by_hand and "promote by dan" in promoted_by_hand
    assert team.serving() == second
    assert "has had no rollout in stage" in vic.fails("rollout", "status", ROUTE, "--env", "stage").output

    listed = vic.ok("rollout", "list", "--route", ROUTE).output.splitlines()
    assert [line.split()[4] for line in listed[1:]] == ["promoted", "aborted"]  # newest first
    assert [r["status"] for r in vic.json("rollout", "list")] == ["promoted", "aborted"]
    history = vic.ok("releases", "history", ROUTE).output.splitlines()
    assert history[-1].split()[2:4] == ["prod", "rollout"]


def test_a_rollout_start_is_refused_where_no_strategy_is_set(team: Team) -> None:
    first, second = team.release(0), team.release(1)
    team.ship(first)
    team.to_stage(second)
    refused = team.as_("dan").fails("rollout", "start", ROUTE)
    assert "no rollout strategy in prod" in refused.output and "lockgate rollout set FILE" in refused.output
    moved = team.as_("dan").ok("promote", ROUTE, "--to", "prod").output  # without a strategy: at once
    assert moved.strip() == f"{ROUTE} prod -> {second} (was {first})"


# --- the controller decides, status --watch follows -----------------------------------------------------


def test_watch_follows_a_healthy_canary_until_the_controller_promotes_it(team: Team, cli: Cli) -> None:
    first, second = team.release(0), team.release(1)
    team.ship(first)
    key = team.prod_key()
    cli.ok("rollout", "set", str(fast_canary(team)))
    team.to_stage(second)
    team.as_("dan").ok("rollout", "start", ROUTE)
    watcher = team.watcher("--timeout", "60s")
    time.sleep(3)  # the watcher shows the rollout waiting for traffic before any arrives

    arms = set()
    for n in range(60):
        arm, answer = team.call(key, f"customer-{n}")
        if arm is None:
            break  # the controller has promoted the candidate already
        arms.add(arm)
        assert answer == '{"answer": "Where is my invoice? %s"}' % ("#1" if arm == "candidate" else "#0")
        again, _ = team.call(key, f"customer-{n}")
        assert again in (arm, None)  # sticky: a customer keeps their arm for the whole rollout
    assert arms == {"candidate", "baseline"}

    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, (out, err)
    assert "inconclusive: not enough traffic yet" in out
    assert re.search(r"stage 1 of 2  pass: \d+ candidate and \d+ baseline calls", out), out
    assert "-> promoted: stage 1 of 2 passed at 50%: the candidate takes all traffic" in out
    assert "canary, promoted" in out
    assert team.serving() == second
    # every customer gets the candidate now, and no arm is named any more
    assert team.answers_after_the_rollout(key) == {(None, '{"answer": "Where is my invoice? #1"}')}


def test_watch_exits_1_when_a_candidate_breaking_its_contract_is_rolled_back(team: Team, cli: Cli) -> None:
    first, broken = team.release(0), team.release(1, keeps_contract=False)
    team.ship(first)
    key = team.prod_key()
    cli.ok("rollout", "set", str(fast_canary(team)))
    team.to_stage(broken)
    team.as_("dan").ok("promote", ROUTE, "--to", "prod")
    refusals = []
    for n in range(40):
        try:
            team.call(key, f"customer-{n}")
        except openai.InternalServerError as exc:  # the candidate's answers violate the contract
            refusals.append(exc.message)
    assert refusals and all("violates the output contract" in message for message in refusals)
    watch = ("--watch", "--every", "0.2", "--timeout", "60s")
    watched = team.as_("dan").fails("rollout", "status", ROUTE, *watch)
    assert "canary, rolled_back" in watched.output
    assert re.search(r"contract violations\s+1\.0000\s+0\.0000\s+FAIL", watched.output), watched.output
    assert "output-contract violations 1.0000 on the candidate" in watched.output
    assert team.serving() == first
    assert team.answers_after_the_rollout(key) == {(None, '{"answer": "Where is my invoice? #0"}')}


def test_ctrl_c_stops_watching_and_the_rollout_goes_on(team: Team, cli: Cli) -> None:
    team.ship(team.release(0))
    cli.ok("rollout", "set", str(slow_canary(team)))
    team.to_stage(team.release(1))
    team.as_("dan").ok("promote", ROUTE, "--to", "prod")
    watcher = team.watcher()
    deadline = time.monotonic() + 30
    assert watcher.stdout is not None
    while "next decision" not in watcher.stdout.readline():
        assert time.monotonic() < deadline and watcher.poll() is None
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 130, err
    assert "stopped watching" in err and "goes on on the server" in err
    assert team.as_("vic").json("rollout", "status", ROUTE)["status"] == "running"
