"""The shipped Kubernetes manifests and Grafana dashboard are consistent with
the gateway: the ConfigMap passes the same checks as `run`, probes and scrapes
hit the admin routes, and the dashboard queries only metrics the gateway exports."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.errors import ConfigError
from gateway.loading import load_checked
from gateway.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


KUSTOMIZE_KINDS = ("Kustomization", "Component")
NOT_IN_KUBERNETES = ("ServiceMonitor",)  # a Prometheus Operator CRD: checked field by field
OLDEST_KUBERNETES = "1.27"  # the oldest release the manifests are written for


def manifests() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc:
                out.append((path, doc))
    return out


def docs() -> dict[str, dict]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for _, doc in manifests()
        if doc["kind"] not in KUSTOMIZE_KINDS
    }


def workloads() -> list[dict]:
    return [d for d in docs().values() if d["kind"] in ("Deployment", "StatefulSet")]


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(files)
    # the optional parts are components, each listing its own files
    components = [p.parent for p in K8S.glob("components/*/kustomization.yaml")]
    assert [c.name for c in components] == ["servicemonitor"]
    for component in components:
        doc = yaml.safe_load((component / "kustomization.yaml").read_text())
        assert doc["kind"] == "Component"
        own = {p.name for p in component.glob("*.yaml")} - {"kustomization.yaml"}
        assert sorted(doc["resources"]) == sorted(own)
        assert f"components/{component.name}" in (K8S / "kustomization.yaml").read_text()


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_manifests_validate_against_the_kubernetes_schemas(version):
    """Strict (unknown fields are errors), against the oldest and newest releases: the
    schemas ship with kubernetes-validate, no cluster or network needed."""
    checked = 0
    for path, doc in manifests():
        if doc["kind"] in KUSTOMIZE_KINDS + NOT_IN_KUBERNETES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']}: {err.message} at {err.path}")
        checked += 1
    assert checked >= 12


def test_a_prestop_sleep_action_would_be_refused_before_kubernetes_1_29():
    deployment = copy.deepcopy(docs()["Deployment/azdo-gateway"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["lifecycle"]["preStop"] = {"sleep": {"seconds": 5}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.28", strict=True)
    kubernetes_validate.validate(deployment, "1.29", strict=True)


def test_the_hpa_owns_the_replica_count():
    d = docs()
    hpa = d["HorizontalPodAutoscaler/azdo-gateway"]["spec"]
    target = d[f"{hpa['scaleTargetRef']['kind']}/{hpa['scaleTargetRef']['name']}"]
    assert target["apiVersion"] == hpa["scaleTargetRef"]["apiVersion"]
    assert "replicas" not in target["spec"]  # an apply would reset what the HPA chose
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = d["PodDisruptionBudget/azdo-gateway"]["spec"]
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a node drain can always proceed


def test_every_container_is_non_root_read_only_and_bounded():
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            res = container["resources"]
            assert {"cpu", "memory"} <= res["requests"].keys() and "memory" in res["limits"]
            assert "readinessProbe" in container and "livenessProbe" in container


def test_prestop_runs_a_program_the_image_has():
    container = docs()["Deployment/azdo-gateway"]["spec"]["template"]["spec"]["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and float(command[1]) > 0
    # the runtime image is Debian slim, whose coreutils has sleep
    bases = re.findall(r"^FROM (\S+)", (ROOT / "Containerfile").read_text(), re.M)
    assert re.fullmatch(r"docker\.io/library/python:\$\{PYTHON_VERSION\}-slim-bookworm", bases[-1])


def test_the_image_lets_run_choose_its_worker_count():
    text = (ROOT / "Containerfile").read_text()
    (cmd,) = re.findall(r"^CMD (.*)$", text, re.M)
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.*)$", text, re.M)
    assert "--workers" not in cmd + entrypoint  # the default follows the CPU quota


def test_configmap_passes_the_checks_run_uses(tmp_path, monkeypatch):
    cm = docs()["ConfigMap/azdo-gateway-config"]
    deployment = docs()["Deployment/azdo-gateway"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v.get("configMap")]
    for item in volume["configMap"]["items"]:
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(cm["data"][item["key"]])
    token = tmp_path / "federated-token"
    token.write_text("eyJ.fake.token")
    monkeypatch.setenv("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = pod_environment(container, STATE_SECRET)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_checked(tmp_path / "gateway.yaml")
    assert [c.name for c in config.clients] == ["jenkins-legacy"]
    gw = config.gateway
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["proxy"], ports["admin"]) == (gw.listen.port, gw.admin.port)
    assert gw.admin.host == "0.0.0.0"  # reachable by probes and Prometheus
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert grace > gw.limits.shutdown_grace_s + pause
    assert "/etc/azdo-gateway/gateway.yaml" in container["args"]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gw.listen.trusted_proxies  # behind the Ingress: its X-Forwarded-For is believed
    # every replica on the one Redis, tokens in it encrypted with the Secret's key
    assert gw.state.backend == "redis"
    assert gw.state.url is not None and gw.state.url.get_secret_value() == env["REDIS_URL"]
    assert gw.state.key() == b"k" * 32

    # the Ingress passes bodies of every size the gateway accepts, streams both
    # ways, and waits longer than the gateway waits for Azure DevOps
    ingress = docs()["Ingress/azdo-gateway"]
    notes = ingress["metadata"]["annotations"]
    nginx = "nginx.ingress.kubernetes.io/"
    limits = [gw.limits.body_bytes.limit(c, gw.limits.max_body_bytes) for c in BODY_CLASSES]
    body_size = notes[nginx + "proxy-body-size"]
    if None in limits:
        assert body_size == "0"  # "0": no limit
    else:
        assert body_size == "0" or nginx_size(body_size) >= max(limits)  # type: ignore[type-var]
    assert notes[nginx + "proxy-request-buffering"] == "off"
    assert notes[nginx + "proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[nginx + timeout]) >= gw.upstream.read_timeout_s
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = docs()[f"Service/{backend['name']}"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert urlsplit(gw.listen.public_url or "").hostname == ingress["spec"]["rules"][0]["host"]


BODY_CLASSES = ("rest", "git", "packages", "unmatched")
# What `kubectl create secret generic azdo-gateway-state` (deployment.yaml) puts in it
STATE_SECRET = {
    "azdo-gateway-state": {
        "encryption-key": base64.b64encode(b"k" * 32).decode(),
        "redis-password": "0f" * 24,
    }
}


def pod_environment(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secretKeyRef values, and
    $(VAR) in a value replaced by a variable defined above it."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
    return env


def test_replicas_share_the_redis_the_manifests_run(tmp_path):
    d = docs()
    gateway = d["Deployment/azdo-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = pod_environment(gateway, STATE_SECRET)
    url = urlsplit(env["REDIS_URL"])
    assert (
        url.scheme == "redis"
        and url.password == STATE_SECRET["azdo-gateway-state"]["redis-password"]
    )
    service = d[f"Service/{url.hostname}"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    redis = d[f"StatefulSet/{url.hostname}"]
    assert redis["spec"]["serviceName"] == url.hostname
    assert (
        service["spec"]["selector"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    assert server["ports"][0]["containerPort"] == 6379
    server_env = pod_environment(server, STATE_SECRET)
    args = [re.sub(r"\$\((\w+)\)", lambda m: server_env[m[1]], a) for a in server["args"]]
    assert args[args.index("--requirepass") + 1] == url.password  # the same secret both sides
    # only the gateway's pods may reach it
    policy = d["NetworkPolicy/azdo-gateway-redis"]["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )
    gateway_labels = d["Deployment/azdo-gateway"]["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    # the gateway's Service does not also select the Redis pod
    selector = d["Service/azdo-gateway"]["spec"]["selector"]
    assert not selector.items() <= redis["spec"]["template"]["metadata"]["labels"].items()


def nginx_size(text: str) -> int:
    """An nginx size ("8m", "1g", "512k", "1024") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


def test_scraping_and_disruption_budget_select_the_pods():
    d = docs()
    labels = d["Deployment/azdo-gateway"]["spec"]["template"]["metadata"]["labels"]
    for name in ("PodDisruptionBudget/azdo-gateway",):
        sel = d[name]["spec"]["selector"]["matchLabels"]
        assert sel.items() <= labels.items()
    admin_svc = d["Service/azdo-gateway-admin"]
    sm = d["ServiceMonitor/azdo-gateway"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= admin_svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["endpoints"][0]["port"] == admin_svc["spec"]["ports"][0]["name"]
    assert (
        d["HorizontalPodAutoscaler/azdo-gateway"]["spec"]["scaleTargetRef"]["name"]
        == "azdo-gateway"
    )


def test_no_secret_values_in_manifests():
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert not re.search(r"client_secret:\s*[^\s${]", text)
    assert not re.search(r"\bpat:\s*[^\s${]", text)


def test_dashboard_queries_only_exported_metrics():
    dash = json.loads((ROOT / "deploy" / "grafana" / "azdo-gateway.json").read_text())
    registry = CollectorRegistry()
    Metrics(registry)
    exported = set()
    for fam in registry.collect():
        for suffix in ("", "_total", "_bucket", "_sum", "_count"):
            exported.add(fam.name + suffix)
    used = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\bazdo_gateway_[a-z_]+", target["expr"]))
    assert used and used <= exported, used - exported
    design = {
        "azdo_gateway_requests_total",
        "azdo_gateway_request_duration_seconds_bucket",
        "azdo_gateway_upstream_duration_seconds_bucket",
        "azdo_gateway_denied_total",
        "azdo_gateway_token_acquisitions_total",
        "azdo_gateway_token_cache_hits_total",
        "azdo_gateway_token_expiry_seconds",
        "azdo_gateway_inflight_requests",
        "azdo_gateway_upstream_throttled_total",
        "azdo_gateway_config_reloads_total",
    }
    assert design <= used  # every DESIGN metric has a panel


def test_configmap_passes_check_offline_without_the_clusters_secrets(tmp_path, monkeypatch):
    """What a pipeline runs on the real configuration: no workload identity, no tenant."""
    cm = docs()["ConfigMap/azdo-gateway-config"]
    (tmp_path / "gateway.yaml").write_text(cm["data"]["gateway.yaml"])
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "clients.yaml").write_text(cm["data"]["policies"])
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError):
        load_checked(tmp_path / "gateway.yaml")
    config = load_checked(tmp_path / "gateway.yaml", offline=True)
    assert {n.code for n in config.notes} == {"env_unset"}
    assert config.warnings == ()  # `check --offline --strict` passes
    assert [c.name for c in config.clients] == ["jenkins-legacy"]


def test_configmap_validates_against_the_schemas():
    cm = docs()["ConfigMap/azdo-gateway-config"]
    for key, name in (("gateway.yaml", "gateway.schema.json"), ("policies", "policy.schema.json")):
        schema = json.loads((K8S.parents[1] / "schemas" / name).read_text())
        errors = list(
            jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(cm["data"][key]))
        )
        assert [e.message for e in errors] == [], key
