"""Deployment files that would start on a first try: checked offline, parsed, walked against the code.

No Docker engine or cluster runs here, so each file is checked the way its tool would:
Kubernetes objects against the Kubernetes API schemas (`kubernetes-validate`, strict:
unknown fields fail), KEDA's objects against KEDA's own CRD schemas, docker-compose.yml
against the compose specification (both vendored in infra/schemas-vendor). Then every
service's command is parsed by the real `alpr` CLI, its environment loaded by the real
settings, every path it names found on a mount, and every probe sent to a real metrics server.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import urllib.error
import urllib.request
from pathlib import Path

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from alpr.cli import cli
from alpr.core.settings import Settings, load_settings
from alpr.core.topics import FRAMES, TOPICS
from alpr.recognition.worker import GROUP

ROOT = Path(__file__).parents[1]
K8S = ROOT / "infra" / "k8s"
VENDOR = ROOT / "infra" / "schemas-vendor"
SERVICES = ("camera", "worker", "alerts", "warehouse", "proxy")
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())  # oldest still widely run, and the newest known
# Created by the site, not by these manifests (infra/k8s/00-namespace-config.yaml, docs/operations.md).
OUT_OF_BAND = {("Secret", "alpr-secrets"), ("Secret", "alpr-proxy-tls"), ("ConfigMap", "alpr-cameras")}
SECRET_KEYS = {"ALPR_KAFKA_SASL_USERNAME", "ALPR_KAFKA_SASL_PASSWORD", "ALPR_CLICKHOUSE_USER",
               "ALPR_CLICKHOUSE_PASSWORD"}
# KEDA v2.20.2 pkg/scalers/kafka_scaler.go: keys read from a trigger's metadata, and from a TriggerAuthentication.
KEDA_KAFKA_METADATA = {"bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
                       "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
                       "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
                       "ensureEvenDistributionOfPartitions", "version", "tls", "unsafeSsl", "sasl",
                       "saslTokenProvider", "awsRegion"}
KEDA_KAFKA_AUTH = {"tls", "ca", "cert", "key", "keyPassword", "sasl", "username", "password", "saslTokenProvider",
                   "scopes", "oauthTokenEndpointUri", "oauthExtensions", "keytab", "realm", "kerberosConfig",
                   "kerberosServiceName", "kerberosDisableFAST"}
PATH_SETTINGS = {n for n, f in Settings.model_fields.items() if "Path" in str(f.annotation)}


def _docs() -> list[dict]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _docs() if d["kind"] == kind}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _pod_specs() -> dict[str, dict]:
    """Every pod template (Deployments and Jobs) by object name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in _docs() if d["kind"] in ("Deployment", "Job")}


# --- 1. each file against its tool's schema

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_object_is_valid_for_the_api_server(version: str) -> None:
    core = [d for d in _docs() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Deployment", "Job", "Service",
                                         "PodDisruptionBudget"}
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field, on any mistake


def test_kubernetes_validation_refuses_a_misspelt_field() -> None:
    """The check above can fail: a typo that kubectl --validate=strict would refuse is refused here too."""
    dep = copy.deepcopy(_kind("Deployment")["alpr-proxy"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = dep["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[0], strict=True)


def _strict(schema: dict) -> dict:
    """A CRD schema that refuses unknown fields, as the API server's strict field validation does."""
    schema = copy.deepcopy(schema)

    def walk(node) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _crd_validator(kind: str, version: str) -> jsonschema.Validator:
    for path in VENDOR.glob("keda.sh_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
            schema = _strict(v["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's, checked above
            return jsonschema.Draft7Validator(schema)
    raise AssertionError(f"no vendored CRD for {kind}")


def test_keda_objects_match_kedas_crd_schemas() -> None:
    keda = [d for d in _docs() if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}
    for doc in keda:
        validator = _crd_validator(doc["kind"], doc["apiVersion"].split("/")[1])
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
    bad = copy.deepcopy(_kind("ScaledObject")["alpr-worker"])
    bad["spec"]["triggers"][0]["authenticationRef"] = {"nmae": "alpr-kafka-auth"}
    assert list(_crd_validator("ScaledObject", "v1alpha1").iter_errors(bad)), "the CRD check must be able to fail"


def test_keda_can_log_in_to_kafka_with_what_exists() -> None:
    """The trigger's authenticationRef names a TriggerAuthentication here, whose Secret keys exist."""
    so = _kind("ScaledObject")["alpr-worker"]
    (trigger,) = so["spec"]["triggers"]
    assert set(trigger["metadata"]) <= KEDA_KAFKA_METADATA
    auth = _kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) <= KEDA_KAFKA_AUTH and {"username", "password"} <= set(params)
    for ref in params.values():
        assert ref["name"] == "alpr-secrets" and ref["key"] in SECRET_KEYS
    config = _kind("ConfigMap")["alpr-config"]["data"]
    # KEDA logs in the way the pipeline does: SASL/SCRAM-SHA-512 over TLS (alpr.core.kafka).
    assert config["ALPR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    assert trigger["metadata"]["bootstrapServers"] == config["ALPR_KAFKA_BOOTSTRAP"]


def test_compose_file_matches_the_compose_specification() -> None:
    schema = yaml.safe_load((VENDOR / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors
    bad = _compose()
    bad["services"]["init"]["depends_on"]["clickhouse"] = {"condition": "service_happy"}
    assert list(validator.iter_errors(bad)), "the compose check must be able to fail"


# --- 2. what the services run, against the code

def _rest(ctx: click.Context) -> list[str]:
    # click 8.2 renamed Context.protected_args to _protected_args (the old name warns).
    protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
    return [*protected, *ctx.args]


def _parse_alpr(args: list[str]) -> click.Context:
    """Parse `alpr ARGS` with the real CLI down to the leaf command, without running anything."""
    ctx = cli.make_context("alpr", list(args))
    command: click.Command = cli
    rest = _rest(ctx)
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, rest)
        assert command is not None, f"alpr {' '.join(args)}: no subcommand {name}"
        ctx = command.make_context(name, rest, parent=ctx)
        rest = _rest(ctx)
    return ctx


def _alpr_calls(script: str) -> list[list[str]]:
    """The `alpr ...` invocations in a shell script (each line's words from `alpr` to `&&`, `;` or the end)."""
    calls = []
    for line in script.splitlines():
        words = shlex.split(line.replace("&&", " ; ").replace(";", " ; "), comments=True)
        for i, word in enumerate(words):
            if word == "alpr" and (i == 0 or words[i - 1] not in ("-m",)):
                call = []
                for w in words[i + 1:]:
                    if w == ";":
                        break
                    call.append(w)
                calls.append(call)
    return calls


def _compose_runs() -> dict[str, tuple[list[list[str]], dict[str, str], list[str]]]:
    """Per alpr-image compose service: its alpr invocations, environment, and container mount points."""
    out = {}
    for name, svc in _compose()["services"].items():
        if svc.get("image") != "alpr:latest":
            continue
        entry = svc.get("entrypoint")
        if entry is None:
            calls = [svc["command"]]
        elif entry[:2] == ["sh", "-c"]:
            calls = _alpr_calls(entry[2])
        else:
            calls = []
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        mounts = [v.split(":")[1] for v in svc.get("volumes", [])]
        out[name] = (calls, env, mounts)
    return out


def _k8s_runs() -> dict[str, tuple[list[list[str]], dict[str, str], list[str]]]:
    config = _kind("ConfigMap")["alpr-config"]["data"]
    out = {}
    for name, pod in _pod_specs().items():
        (c,) = pod["containers"]
        if "command" in c:
            assert c["command"][:2] == ["sh", "-c"]
            calls = _alpr_calls(c["command"][2])
        else:
            calls = [c["args"]]  # the image's ENTRYPOINT is `alpr`
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] == "alpr-config"
                env.update(config)
            else:
                assert source["secretRef"]["name"] == "alpr-secrets"
                env.update({k: "from-the-secret" for k in SECRET_KEYS})
        env.update({e["name"]: e["value"] for e in c.get("env", [])})
        out[name] = (calls, env, [m["mountPath"] for m in c.get("volumeMounts", [])])
    return out


def _with_env(env: dict[str, str]) -> Settings:
    """The settings a process with exactly this environment would load (unknown ALPR_ names fail)."""
    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("ALPR_")]:
            del os.environ[k]
        resolved = {k: re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "set-in-dot-env", v) for k, v in env.items()}
        os.environ.update(resolved)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _under(path: Path, mounts: list[str]) -> bool:
    return any(path == Path(m) or Path(m) in path.parents for m in mounts)


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_every_service_command_env_and_path_is_one_the_code_knows(where: str) -> None:
    runs = _compose_runs() if where == "compose" else _k8s_runs()
    commands_seen = set()
    for name, (calls, env, mounts) in runs.items():
        settings = _with_env(env)
        for call in calls:
            ctx = _parse_alpr(call)
            commands_seen.add(ctx.command_path.removeprefix("alpr "))
            for param, value in ctx.params.items():
                if isinstance(value, Path) or (param.endswith("path") and value):
                    assert _under(Path(value), mounts), f"{where} {name}: {param}={value} is on no mount"
        for field in PATH_SETTINGS & {k.removeprefix("ALPR_").lower() for k in env}:
            value = getattr(settings, field)
            assert _under(value, mounts), f"{where} {name}: ALPR_{field.upper()}={value} is on no mount"
        if settings.bind_host not in ("127.0.0.1", "localhost") and any(c and c[0] == "proxy" for c in calls):
            assert settings.proxy_tls_cert and settings.proxy_tls_key, f"{where} {name}: a proxy beyond loopback needs TLS"
    assert set(SERVICES) <= commands_seen and {"topics apply", "migrate"} <= commands_seen


def test_commands_fail_this_walk_when_wrong() -> None:
    with pytest.raises(click.UsageError):
        _parse_alpr(["worker", "--backend", "tensorrrt"])
    with pytest.raises(Exception, match="unknown setting ALPR_TRT_CACHE_DIR"):
        _with_env({"ALPR_TRT_CACHE_DIR": "/var/cache/alpr/trt"})


def test_compose_mounts_exist_and_files_load() -> None:
    from alpr.recognition.camera import load_cameras

    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"compose {name}: {source} does not exist"
            else:
                assert source in _compose()["volumes"], f"compose {name}: volume {source} not declared"
    (calls, _, _) = _compose_runs()["camera"]
    config = dict(v.split(":")[:2][::-1] for v in _compose()["services"]["camera"]["volumes"])
    assert load_cameras(ROOT / config[calls[0][calls[0].index("--config") + 1]])


def test_kubernetes_references_resolve_to_objects_here_or_named_out_of_band() -> None:
    defined = {(d["kind"], d["metadata"]["name"]) for d in _docs()}
    operations = (ROOT / "docs" / "operations.md").read_text()
    for kind, name in OUT_OF_BAND:
        assert f"{name}" in operations, f"docs/operations.md must say how to create {kind} {name}"
        assert (kind, name) not in defined
    for pod_name, pod in _pod_specs().items():
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined | OUT_OF_BAND
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined | OUT_OF_BAND
        for c in pod.get("initContainers", []) + pod["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}, f"{pod_name}: mount of no volume"
    # A kubernetes.io/tls Secret holds tls.crt and tls.key: the proxy's settings name those files.
    (proxy,) = _pod_specs()["alpr-proxy"]["containers"]
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert {Path(env["ALPR_PROXY_TLS_CERT"]).name, Path(env["ALPR_PROXY_TLS_KEY"]).name} == {"tls.crt", "tls.key"}


def test_probes_ask_what_the_metrics_server_answers() -> None:
    """Every probe and healthcheck path is one the real metrics server serves (not a 404), on its port."""
    from alpr.core.metrics import Health, MetricsServer

    health = Health()
    health.set_ready_check(lambda: True)
    server = MetricsServer("127.0.0.1", 0, health).start()
    try:
        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(server.url + path, timeout=5) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        probed = set()
        for name, pod in _pod_specs().items():
            for c in pod["containers"]:
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if kind in c:
                        get = c[kind]["httpGet"]
                        assert ports[get["port"]] == Settings.model_fields["metrics_port"].default
                        probed.add(get["path"])
        for name, svc in _compose()["services"].items():
            if svc.get("image") == "alpr:latest" and "healthcheck" in svc:
                (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(svc["healthcheck"]["test"]))
                assert int(url[0]) == Settings.model_fields["metrics_port"].default
                probed.add(url[1])
        assert probed == {"/healthz", "/readyz"}
        assert all(status(p) == 200 for p in probed)
        assert status("/ready") == 404  # a misspelt probe path would be told apart
    finally:
        server.stop()


def test_compose_starts_in_order_on_healthy_dependencies() -> None:
    services = _compose()["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3", "schema-registry", "clickhouse"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    init = services["init"]
    assert all(dep["condition"] == "service_healthy" for dep in init["depends_on"].values())
    assert set(init["depends_on"]) == {"kafka-1", "kafka-2", "kafka-3", "schema-registry", "clickhouse"}
    assert "retry alpr topics apply" in init["entrypoint"][2]  # retried until the cluster answers
    for name in SERVICES:
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert services["proxy"]["depends_on"]["init-certs"]["condition"] == "service_completed_successfully"


def test_engine_cache_is_where_the_code_looks() -> None:
    (c,) = _pod_specs()["alpr-worker"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_specs()["alpr-worker"]["volumes"]}
    assert env["ALPR_TRT_CACHE"] == mounts["engine-cache"]
    assert "hostPath" in volumes["engine-cache"]  # outlives the pod: engines are per node (GPU model)
    (owner,) = _pod_specs()["alpr-worker"]["initContainers"]
    assert owner["command"][-1] == mounts["engine-cache"]
    assert f"chown {10001}:{10001} {mounts['engine-cache']}" in (ROOT / "Dockerfile.gpu").read_text()


# --- 3. the deployments agree with each other and with the topic list

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
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
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
                  ["spec"]["containers"][0]["ports"]}["https"]
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


def test_network_policies_deny_by_default_and_open_only_https_and_metrics() -> None:
    policies = _kind("NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    opened = {}
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                opened[port["port"]] = (policy["spec"]["podSelector"], rule.get("from"))
    (proxy,) = _pod_specs()["alpr-proxy"]["containers"]
    https = {p["name"]: p["containerPort"] for p in proxy["ports"]}["https"]
    assert set(opened) == {https, Settings.model_fields["metrics_port"].default}
    assert opened[https][0] == {"matchLabels": {"app": "alpr-proxy"}}
    metrics_from = opened[Settings.model_fields["metrics_port"].default][1]
    assert metrics_from and all("namespaceSelector" in peer for peer in metrics_from)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; kubectl and docker compose refuse the file. So do we."""

    def construct_mapping(self, node, deep=False):
        keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key(s) {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep)


def test_no_deployment_file_repeats_a_key() -> None:
    files = [ROOT / "docker-compose.yml", ROOT / "infra" / "prometheus" / "alpr-alerts.yaml",
             *sorted(K8S.glob("*.yaml"))]
    for path in files:
        list(yaml.load_all(path.read_text(), Loader=_StrictLoader))
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        yaml.load("env: [a]\nimage: x\nenv: [b]\n", Loader=_StrictLoader)
