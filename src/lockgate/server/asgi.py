"""ASGI factory for worker processes: rebuilds the server app from the environment ``lockgate serve`` set."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from lockgate.instance import load_config, open_instance
from lockgate.server.app import build_app
from lockgate.server.drain import DRAIN_ENV

CONFIG_ENV = "LOCKGATE_CONFIG"


def create_from_env() -> Starlette:
    drain = float(os.environ.get(DRAIN_ENV) or 0)
    return build_app(open_instance(), load_config(os.environ.get(CONFIG_ENV) or None), drain_seconds=drain)
