"""ASGI factory for worker processes: rebuilds the server app from the environment ``lockgate serve`` set."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from lockgate.instance import load_config, open_instance
from lockgate.server.app import build_app

CONFIG_ENV = "LOCKGATE_CONFIG"


def create_from_env() -> Starlette:
    return build_app(open_instance(), load_config(os.environ.get(CONFIG_ENV) or None))
