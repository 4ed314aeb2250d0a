"""Deployment files agree with each other and with the topic list: parsed, not eyeballed."""

from __future__ import annotations

from pathlib import Path

import yaml

from alpr.core.topics import FRAMES, TOPICS
from alpr.recognition.worker import GROUP

ROOT = Path(__file__).parents[1]
K8S = ROOT / "infra" / "k8s"
SERVICES = ("camera", "worker", "alerts", "warehouse", "proxy")


def _docs() -> list[dict]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _docs() if d["kind"] == kind}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_deployed_with_requests_probes_and_a_pdb() -> None:
    deployments, pdbs = _kind("Deployment"), _kind("PodDisruptionBudget")
    for name in SERVICES:
        dep = deployments[f"alpr-{name}"]
        assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        metrics_port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
        assert c["livenessProbe"]["httpGet"]["port"] == "metrics" and metrics_port == 9100
        assert c["args"][0] == name
        assert f"alpr-{name}" in pdbs
        assert pdbs[f"alpr-{name}"]["spec"]["selector"]["matchLabels"] == {"app": f"alpr-{name}"}


def test_gpu_worker_requests_a_gpu_and_uses_tensorrt() -> None:
    (c,) = _kind("Deployment")["alpr-worker"]["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1 == c["resources"]["limits"]["nvidia.com/gpu"]
    assert c["args"][c["args"].index("--backend") + 1] == "tensorrt"


def test_keda_scales_worker_on_frames_lag_never_past_partitions() -> None:
    so = _kind("ScaledObject")["alpr-worker"]
    assert so["spec"]["scaleTargetRef"]["name"] == "alpr-worker"
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka" and meta["topic"] == FRAMES and meta["consumerGroup"] == GROUP
    assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= TOPICS[FRAMES].partitions


def test_images_and_ports_match_docker_compose() -> None:
    compose = _compose()["services"]
    for name in SERVICES:
        (c,) = _kind("Deployment")[f"alpr-{name}"]["spec"]["template"]["spec"]["containers"]
        assert c["image"].split("-gpu")[0] == compose[name]["image"] == "alpr:latest"
        assert compose[name]["command"][0] == name
    proxy_port = {p["name"]: p["containerPort"] for p in _kind("Deployment")["alpr-proxy"]["spec"]["template"]
                  ["spec"]["containers"][0]["ports"]}["http"]
    assert f"127.0.0.1:{proxy_port}:{proxy_port}" in compose["proxy"]["ports"]
    assert _kind("Service")["alpr-proxy"]["spec"]["ports"][0]["port"] == proxy_port


def test_compose_publishes_only_on_loopback_and_has_three_kraft_brokers() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    brokers = [s for n, s in services.items() if n.startswith("kafka-")]
    assert len(brokers) == 3
    assert all("controller" in s["environment"]["KAFKA_PROCESS_ROLES"] for s in brokers)
    assert "clickhouse" in services and "schema-registry" in services
