"""deploy/k8s, a kustomization: Deployment with probes, Service, HPA, PodDisruptionBudget, ConfigMap,
Secret and the migration Job. Checked as manifests (no cluster here): against the Kubernetes API's own
schemas with kubernetes-validate (strict: an unknown or misspelt field fails), and rendered by ``kubectl
kustomize`` where kubectl is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import DEPLOY, ROOT, env_file, load_all_yaml, load_yaml

K8S = DEPLOY / "k8s"
KUSTOMIZATION = load_yaml(K8S / "kustomization.yaml")
SECRET_KEYS = set(env_file(K8S / "secrets.env.example"))


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> object, from the files the kustomization lists."""
    found: dict[str, dict[str, Any]] = {}
    for resource in KUSTOMIZATION["resources"]:
        for document in load_all_yaml(K8S / resource):
            assert document["kind"] not in found
            found[document["kind"]] = document
    return found


KUBERNETES_VERSIONS = ("1.30", "1.33")
"""The oldest release the manifests support (autoscaling/v2, policy/v1, startup probes) and a current one."""

OBJECTS = manifests()
DEPLOYMENT = OBJECTS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
JOB_POD = OBJECTS["Job"]["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def test_the_kustomization_lists_every_file_and_builds_the_expected_objects() -> None:
    listed = set(KUSTOMIZATION["resources"])
    listed |= {f for generator in KUSTOMIZATION["configMapGenerator"] for f in generator["files"]}
    secret_files = {f for generator in KUSTOMIZATION["secretGenerator"] for f in generator["envs"]}
    committed = {p.name for p in K8S.iterdir()} - {"kustomization.yaml", "secrets.env.example", "secrets.env"}
    assert committed == listed
    assert secret_files == {"secrets.env"}  # made from secrets.env.example, never committed
    assert set(OBJECTS) == {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
    }
    assert [g["name"] for g in KUSTOMIZATION["configMapGenerator"]] == ["lockgate-config"]
    assert [g["name"] for g in KUSTOMIZATION["secretGenerator"]] == ["lockgate-secrets"]
    [image] = KUSTOMIZATION["images"]
    assert image["name"] == "lockgate" and image["newTag"] not in ("", "latest")


def test_the_deployment_probes_liveness_readiness_and_start_up_on_its_port() -> None:
    [server] = POD["containers"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": 4000}
    assert "--port" in server["args"] and server["args"][server["args"].index("--port") + 1] == "4000"
    probes = {kind: server[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(probe["port"] in ports for probe in probes.values())


def test_pods_drain_within_their_grace_period() -> None:
    [server] = POD["containers"]
    drain = float(env_of(server)["LOCKGATE_DRAIN_SECONDS"]["value"])
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert drain > 0
    assert POD["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 30


def test_every_container_is_non_root_read_only_and_bounded() -> None:
    for pod in (POD, JOB_POD):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(pod):
            own = container["securityContext"]
            assert own["readOnlyRootFilesystem"] is True
            assert own["allowPrivilegeEscalation"] is False
            assert own["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert {"cpu", "memory"} <= set(resources["limits"]), container["name"]
            assert container["image"] == "lockgate"  # set by the kustomization's images


def test_the_service_hpa_and_pdb_select_the_deployment() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    selector = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = OBJECTS["Service"]["spec"]
    assert service["selector"] == selector
    [port] = service["ports"]
    assert port["targetPort"] == "http"
    target = OBJECTS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])
    hpa = OBJECTS["HorizontalPodAutoscaler"]["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert "replicas" not in DEPLOYMENT["spec"]  # the autoscaler owns the count
    pdb = OBJECTS["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert pdb["maxUnavailable"] < hpa["minReplicas"]  # a drain never takes every replica
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_job_migrates_and_the_pods_wait_for_it() -> None:
    [migrate] = JOB_POD["containers"]
    assert migrate["args"] == ["migrate"]
    assert JOB_POD["restartPolicy"] in ("Never", "OnFailure")
    [wait] = POD["initContainers"]
    assert "lockgate migrate --check" in " ".join(wait["command"])
    # The Job's selector labels are not the server's: the Service never routes to it.
    job_labels = OBJECTS["Job"]["spec"]["template"]["metadata"]["labels"]
    assert not OBJECTS["Service"]["spec"]["selector"].items() <= job_labels.items()


def test_secrets_come_from_the_secret_and_every_key_is_used() -> None:
    used: set[str] = set()
    for pod in (POD, JOB_POD):
        for container in containers(pod):
            for name, entry in env_of(container).items():
                if "valueFrom" in entry:
                    reference = entry["valueFrom"]["secretKeyRef"]
                    assert reference["name"] == "lockgate-secrets"
                    assert reference["key"] == name and reference.get("optional") is not True
                    used.add(name)
                else:
                    assert name in ("LOCKGATE_CONFIG", "LOCKGATE_DATA_DIR", "LOCKGATE_DRAIN_SECONDS"), name
    assert used == SECRET_KEYS
    security = (ROOT / "docs" / "security.md").read_text()
    for variable in ("LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY", "LOCKGATE_DATABASE_URL"):
        assert f"`{variable}`" in security and variable in used
    # The migration Job gets the pepper and signing key, so it never creates files that vanish with it.
    assert {"LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY"} <= set(env_of(JOB_POD["containers"][0]))
    assert set(env_file(K8S / "secrets.env.example").values()) >= {"replace-me"}


def test_the_config_map_holds_a_config_naming_only_secret_variables() -> None:
    [server] = POD["containers"]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "lockgate-config"
    assert f"{mounts['config']}/lockgate.yaml" == env_of(server)["LOCKGATE_CONFIG"]["value"]
    text = (K8S / "lockgate.yaml").read_text()
    assert {"${LOCKGATE_METRICS_TOKEN}", "${LOCKGATE_REDIS_URL}"} <= {
        word for word in text.split() if word.startswith("${")
    }
    assert mounts["data"] == env_of(server)["LOCKGATE_DATA_DIR"]["value"]
    assert mounts["tmp"] == "/tmp"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_consistent_names(tmp_path: Path) -> None:
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(work / "secrets.env.example", work / "secrets.env")
    result = subprocess.run(
        ["kubectl", "kustomize", str(work)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in rendered:
        by_kind.setdefault(document["kind"], []).append(document)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "lockgate"
    [secret] = by_kind["Secret"]
    [config] = by_kind["ConfigMap"]
    assert secret["metadata"]["name"].startswith("lockgate-secrets-")  # content hash: changes roll pods
    assert set(secret["data"]) == SECRET_KEYS
    assert set(config["data"]) == {"lockgate.yaml"}
    for kind in ("Deployment", "Job"):
        [workload] = by_kind[kind]
        pod = workload["spec"]["template"]["spec"]
        for container in containers(pod):
            assert container["image"] == f"lockgate:{KUSTOMIZATION['images'][0]['newTag']}"
            for entry in container.get("env", []):
                if "valueFrom" in entry:
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] == config["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", sorted(OBJECTS))
def test_every_object_is_valid_for_the_kubernetes_api(kind: str, version: str) -> None:
    kubernetes_validate.validate(OBJECTS[kind], version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds", 5)
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
