"""Entry point of the ``lockgate`` command."""

from __future__ import annotations

import click

from lockgate import __version__
from lockgate.cli.audit import audit
from lockgate.cli.config import config
from lockgate.cli.datasets import datasets
from lockgate.cli.evals import eval_group
from lockgate.cli.evidence import evidence
from lockgate.cli.gates import gates
from lockgate.cli.keys import keys
from lockgate.cli.models import models
from lockgate.cli.prompts import prompts
from lockgate.cli.releases import pointers, promote, releases, rollback
from lockgate.cli.serve import serve
from lockgate.cli.tenants import tenants
from lockgate.cli.users import users


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lockgate")
def cli() -> None:
    """lockgate: the internal LLM platform."""


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(tenants)
cli.add_command(config)
cli.add_command(users)
cli.add_command(models)
cli.add_command(prompts)
cli.add_command(releases)
cli.add_command(promote)
cli.add_command(rollback)
cli.add_command(pointers)
cli.add_command(audit)
cli.add_command(datasets)
cli.add_command(eval_group)
cli.add_command(gates)
cli.add_command(evidence)


def main() -> None:
    cli()
