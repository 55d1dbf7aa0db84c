"""deploy/compose: three gateways on PostgreSQL and Redis, a one-shot migration, Prometheus scraping
every replica with the metrics token. Checked as files (no Docker engine runs here); promtool checks
the scrape configuration where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, DIGEST, ENV_REFERENCE, env_file, load_yaml

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = load_yaml(COMPOSE_DIR / "compose.yaml")
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS = load_yaml(COMPOSE_DIR / "prometheus.yml")


def seconds(duration: str) -> float:
    value = re.fullmatch(r"(\d+)(s|m)", duration)
    assert value is not None, duration
    return int(value.group(1)) * (60 if value.group(2) == "m" else 1)


def test_the_stack_has_its_services_each_with_a_pinned_image_and_a_health_check() -> None:
    assert set(SERVICES) == {"postgres", "redis", "migrate", "gateway", "prometheus"}
    assert SERVICES["gateway"]["deploy"]["replicas"] == 3
    for name in ("postgres", "redis", "prometheus"):
        image = SERVICES[name]["image"]
        assert DIGEST.match(image), f"{name}: {image} is not pinned by tag and digest"
    for name in ("postgres", "redis", "gateway", "prometheus"):
        assert SERVICES[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert "/readyz" in " ".join(SERVICES["gateway"]["healthcheck"]["test"])
    for name in ("migrate", "gateway"):  # the lockgate image, built from this repository
        build = SERVICES[name]["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert not SERVICES[name]["image"].endswith(":latest")


def test_gateways_start_after_the_migration_and_their_stores() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    gateway = SERVICES["gateway"]
    assert gateway["command"][0] == "serve"
    conditions = {name: spec["condition"] for name, spec in gateway["depends_on"].items()}
    assert conditions == {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }


def test_a_gateway_drains_before_it_is_killed() -> None:
    gateway = SERVICES["gateway"]
    drain = float(gateway["environment"]["LOCKGATE_DRAIN_SECONDS"])
    assert drain > 0
    assert gateway["stop_signal"] == "SIGTERM"
    assert seconds(gateway["stop_grace_period"]) >= drain + 30  # uvicorn's graceful shutdown: 30 s


def test_gateways_run_read_only_without_privileges() -> None:
    for name in ("migrate", "gateway"):
        service = SERVICES[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert "/tmp" in service["tmpfs"]  # worker processes share metric files there


def test_secrets_come_only_from_the_env_file_and_are_required() -> None:
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    referenced = set(ENV_REFERENCE.findall(text)) - {"LOCKGATE_IMAGE"}
    example = env_file(COMPOSE_DIR / ".env.example")
    assert referenced == set(example)
    for variable in referenced:  # ${VAR:?...} everywhere: compose refuses to start without the value
        uses = re.findall(rf"\$\{{{variable}([^}}]*)\}}", text)
        assert uses and all(use.startswith(":?") for use in uses), variable
    assert set(example.values()) == {"replace-me"}
    environment = SERVICES["gateway"]["environment"]
    for variable in ("LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY"):  # docs/security.md: shared by all
        assert environment[variable].startswith(f"${{{variable}:?")


def test_the_gateway_config_names_only_variables_the_gateways_have() -> None:
    config = (COMPOSE_DIR / "lockgate.yaml").read_text()
    named = set(ENV_REFERENCE.findall(config))
    assert named == {"LOCKGATE_METRICS_TOKEN", "LOCKGATE_REDIS_URL"}
    assert named <= set(SERVICES["gateway"]["environment"])
    mounts = SERVICES["gateway"]["volumes"]
    assert "./lockgate.yaml:/etc/lockgate/lockgate.yaml:ro" in mounts
    assert SERVICES["gateway"]["environment"]["LOCKGATE_CONFIG"] == "/etc/lockgate/lockgate.yaml"


def test_prometheus_scrapes_every_gateway_replica_with_the_metrics_token() -> None:
    [job] = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "lockgate"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    token_file = job["authorization"]["credentials_file"]
    prometheus = SERVICES["prometheus"]
    assert [f"/run/secrets/{s}" for s in prometheus["secrets"]] == [token_file]
    assert COMPOSE["secrets"][prometheus["secrets"][0]] == {"environment": "LOCKGATE_METRICS_TOKEN"}
    [discovery] = job["dns_sd_configs"]
    assert discovery["names"] == ["gateway"] and discovery["type"] == "A"
    assert f"--port {discovery['port']}" in " ".join(SERVICES["gateway"]["command"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_configuration(tmp_path: Path) -> None:
    token = tmp_path / "metrics_token"
    token.write_text("scrape-token")
    text = (COMPOSE_DIR / "prometheus.yml").read_text().replace("/run/secrets/metrics_token", str(token))
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    command = ["promtool", "check", "config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
