"""ASGI factory for worker processes: rebuilds the gateway from the environment ``lockgate serve`` set."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from lockgate.api.app import create_control_api
from lockgate.gateway.http import create_app
from lockgate.gateway.runtime import Gateway
from lockgate.instance import load_config, open_instance

CONFIG_ENV = "LOCKGATE_CONFIG"


def create_from_env() -> Starlette:
    config = load_config(os.environ.get(CONFIG_ENV) or None)
    # The parent process already ran migrations; workers only open the store.
    instance = open_instance(upgrade=False)
    return create_app(
        Gateway(config, instance.engine, instance.pepper), create_control_api(instance.control())
    )
