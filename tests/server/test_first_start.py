"""Replicas that start together on one fresh PostgreSQL store bootstrap once between them."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from lockgate.config.loader import LoadedConfig
from lockgate.instance import Instance, open_instance
from lockgate.server.bootstrap import Bootstrap, bootstrap
from lockgate.services import build_services
from lockgate.store.tables import api_keys, users

REPLICAS = 4


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_replicas_starting_together_create_one_admin_key_and_one_admin(
    instance: Instance, config: LoadedConfig
) -> None:
    barrier = threading.Barrier(REPLICAS)
    results: list[Bootstrap] = []
    errors: list[BaseException] = []

    def replica() -> None:
        own = open_instance(instance.data)  # its own engine and connections, as another process has
        services = build_services(own, config)
        barrier.wait()
        try:
            results.append(bootstrap(services, config))
        except Exception as exc:
            errors.append(exc)
        finally:
            own.engine.dispose()

    threads = [threading.Thread(target=replica) for _ in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == REPLICAS
    assert sum(r.api_key is not None for r in results) == 1
    assert sum(r.control_token is not None for r in results) == 1
    with instance.engine.connect() as connection:
        admin_keys = connection.execute(sa.select(sa.func.count()).where(api_keys.c.role == "admin")).scalar()
        admins = connection.execute(sa.select(sa.func.count()).select_from(users)).scalar()
    assert (admin_keys, admins) == (1, 1)
