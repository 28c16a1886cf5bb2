"""The shipped Kubernetes manifests and Grafana dashboard are consistent with
the gateway: the ConfigMap passes the same checks as `run`, probes and scrapes
hit the admin routes, and the dashboard queries only metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from gateway.loading import load_checked
from gateway.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def docs() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(files)


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
    config = load_checked(tmp_path / "gateway.yaml")
    assert [c.name for c in config.clients] == ["jenkins-legacy"]
    gw = config.gateway
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["proxy"], ports["admin"]) == (gw.listen.port, gw.admin.port)
    assert gw.admin.host == "0.0.0.0"  # reachable by probes and Prometheus
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert (
        grace > gw.limits.shutdown_grace_s + container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )
    assert "/etc/azdo-gateway/gateway.yaml" in container["args"]


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
