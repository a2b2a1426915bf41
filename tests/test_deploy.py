"""deploy/kubernetes/: the manifests against the Kubernetes schemas (kubernetes-validate's bundled
copies, strict: unknown fields fail too; no cluster runs here), and how they fit together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
MANIFESTS = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests are checked against (preStop sleep is GA there)


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def container() -> dict:
    return load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", MANIFESTS)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, "1.37.0"])
def test_manifest_is_valid_against_the_kubernetes_schema(name, version):
    kubernetes_validate.validate(load(name), version, strict=True)


def test_the_validator_rejects_an_unknown_field():
    broken = load("service.yaml")
    broken["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    assert sorted(load("kustomization.yaml")["resources"]) == sorted(MANIFESTS)


def test_probes_use_the_service_health_endpoints():
    c = container()
    assert c["startupProbe"]["httpGet"]["path"] == "/.well-known/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/.well-known/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/.well-known/live"


def test_grace_period_covers_prestop_and_drain():
    from app.settings import Settings

    spec = load("deployment.yaml")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container()["env"]}
    drain = float(env.get("HANDSPRING_DRAIN_TIMEOUT_S") or Settings.drain_timeout_s)
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    uvicorn_close = 5  # app/__main__.py: timeout_graceful_shutdown
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain + uvicorn_close


def test_threads_follow_the_cpu_limit():
    env = {e["name"]: e for e in container()["env"]}
    for name in ("HANDSPRING_THREADS", "HANDSPRING_PREPROCESS_WORKERS"):
        assert env[name]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_env_names_are_settings_the_service_knows():
    from app.settings import Settings

    env = {e["name"]: e.get("value") or "2" for e in container()["env"]}
    Settings.from_env(env)  # raises on a bad value; unknown names are caught below
    known = {f"HANDSPRING_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(env) <= known


def test_service_pdb_and_hpa_select_the_deployment():
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    for selector in (load("service.yaml")["spec"]["selector"], load("pdb.yaml")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert load("hpa.yaml")["spec"]["scaleTargetRef"]["name"] == load("deployment.yaml")["metadata"]["name"]


def test_weaviate_values_point_the_module_at_our_service():
    values = load("weaviate-values.yaml")["modules"]["multi2vec-clip"]
    service = load("service.yaml")
    assert values["enabled"] is False
    assert values["inferenceUrl"].startswith(f"http://{service['metadata']['name']}.")
    assert values["inferenceUrl"].endswith(f":{service['spec']['ports'][0]['port']}")
