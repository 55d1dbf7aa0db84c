"""Entry point of the ``lockgate`` command.

Commands are imported only when run, so ``lockgate --help`` and every command that only talks to the
server start in a fraction of a second; only ``serve`` and ``migrate`` load the server.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from lockgate import __version__

# name -> (module:attribute, one-line help shown by `lockgate --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("lockgate.cli.server:serve", "Run the server: gateway, control API and eval worker."),
    "migrate": ("lockgate.cli.server:migrate", "Create or upgrade the store's schema (server side)."),
    "recover-admin": ("lockgate.cli.server:recover_admin", "Break-glass admin token (server side)."),
    "login": (
        "lockgate.cli.session:login",
        "Save a server and token (or redeem an invitation) as a profile.",
    ),
    "logout": ("lockgate.cli.session:logout", "Forget a saved profile."),
    "whoami": ("lockgate.cli.session:whoami", "Who the token belongs to, and their roles."),
    "tokens": ("lockgate.cli.tokens:tokens", "Your control tokens: list, create, rotate, revoke."),
    "users": ("lockgate.cli.users:users", "Invite users and manage their roles."),
    "tenants": ("lockgate.cli.tenants:tenants", "Manage tenants."),
    "keys": ("lockgate.cli.keys:keys", "Manage API keys."),
    "config": ("lockgate.cli.config:config", "Check a lockgate.yaml without starting anything."),
    "models": ("lockgate.cli.models:models", "The model registry: cards, versions, aliases, status."),
    "prompts": ("lockgate.cli.prompts:prompts", "Versioned prompt templates: lint, push, show, diff."),
    "releases": ("lockgate.cli.releases:releases", "Create, inspect, point and approve releases."),
    "promote": ("lockgate.cli.releases:promote", "Promote a route one step through its gate."),
    "rollback": ("lockgate.cli.releases:rollback", "Return an environment to a release it served before."),
    "pointers": ("lockgate.cli.releases:pointers", "Which release each route serves per environment."),
    "rollout": (
        "lockgate.cli.rollout:rollout",
        "Canary, shadow, A/B and bandit rollouts: strategies, status, steering.",
    ),
    "datasets": ("lockgate.cli.datasets:datasets", "Golden datasets the evals run on."),
    "eval": ("lockgate.cli.evals:eval_group", "Run evals on the server; ask a route's gate."),
    "gates": ("lockgate.cli.gates:gates", "Promotion gates and their Rego policies."),
    "limits": (
        "lockgate.cli.limits:limits",
        "Limit rules of a tenant: rates, concurrency, tokens and cost per call.",
    ),
    "budgets": ("lockgate.cli.limits:budgets", "Budgets per tenant, team or key, and what each has spent."),
    "evidence": ("lockgate.cli.evidence:evidence", "Signed evidence: list, show, verify, export."),
    "audit": ("lockgate.cli.audit:audit", "Verify and read the audit log."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target[0].partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The one-line help comes from the table, so listing commands imports none of them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lockgate")
def cli() -> None:
    """lockgate: the internal LLM platform.

    Every command but `serve`, `migrate`, `recover-admin` and the local checks (`config check`, `prompts
    lint`, `gates test`, `evidence verify --bundle`) is a client of a lockgate server: it needs
    LOCKGATE_URL and a control token (LOCKGATE_TOKEN), or a profile saved by `lockgate login`.
    """


def main() -> None:
    cli()
