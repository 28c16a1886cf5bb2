"""Metrics and audit content from real requests through the real pipeline."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import new_key, refusing_port
from tests.integration.ops_support import audit_lines, use_test_runtime

PAT = "upstream-pat-s3cr3t-value"
SP_SECRET = "sp-client-s3cr3t-value"


@pytest.fixture
def closed_port() -> Iterator[int]:
    with refusing_port() as port:
        yield port


async def test_metrics_and_audit_from_real_requests(
    make_entra, make_fake_azdo, make_gateway, tmp_path, closed_port
):  # make_entra first: the identity provider outlives the gateway
    fake = await make_fake_azdo()
    entra = await make_entra()
    entra.register_app("gw-sp", secret=SP_SECRET)
    key, digest = new_key()
    key2, digest2 = new_key()
    key3, digest3 = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url, "vsrm": f"http://127.0.0.1:{closed_port}"}},
            "identity": entra.identity(),
            "credentials": {
                "server": {"type": "pat", "pat": PAT},
                "sp": {"type": "client_secret", "client_id": "gw-sp", "client_secret": SP_SECRET},
                "broken": {
                    "type": "client_secret",
                    "client_id": "gw-sp",
                    "client_secret": "wrong-s3cr3t",
                },
            },
        },
        {
            "ci.yaml": {
                "clients": [
                    {
                        "name": "ci",
                        "credential": "sp",
                        "scopes": ["vso.code", "vso.project"],
                        "api_keys": [{"id": "k1", "sha256": digest}],
                    },
                    {
                        "name": "nightly",
                        "credential": "broken",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "k2", "sha256": digest2}],
                    },
                    {
                        "name": "auditor",
                        "credential": "server",
                        "scopes": [],
                        "mode": "report",
                        "api_keys": [{"id": "k3", "sha256": digest3}],
                    },
                ]
            }
        },
    )
    await use_test_runtime(gw.gateway)
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    repos = "/fabrikam/Fiber/_apis/git/repositories?api-version=7.1"
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + repos, headers={**auth, "X-Request-ID": "trace-42"}) as r:
            assert r.status == 200
            assert r.headers["X-Request-ID"] == "trace-42"
        async with s.post(
            gw.url + "/fabrikam/Fiber/_apis/build/builds", headers=auth, data=b"{}"
        ) as r:
            assert r.status == 403
            denied_id = r.headers["X-Request-ID"]
            assert (await r.json())["requestId"] == denied_id
        async with s.get(gw.url + "/_hosts/vsrm/fabrikam/_apis/projects", headers=auth) as r:
            assert r.status == 502
        async with s.get(
            gw.url + repos, headers={"Authorization": aiohttp.encode_basic_auth("", key2)}
        ) as r:
            assert r.status == 503
        async with s.get(
            gw.url + repos, headers={"Authorization": aiohttp.encode_basic_auth("", key3)}
        ) as r:
            assert r.status == 200
        async with s.get(
            gw.url + repos,
            headers={
                "Authorization": aiohttp.encode_basic_auth("", "azgw_wrong"),
                "X-Request-ID": "bad id with spaces",
            },
        ) as r:
            assert r.status == 401
            assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["X-Request-ID"])
        gw.gateway.runtime.tokens.inner.flush_metrics()  # cache hits are handed over once a second
        async with s.get(gw.admin_url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()

    values = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            values[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value

    def v(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    req = "azdo_gateway_requests_total"
    assert v(req, client="ci", operation_area="git", method="GET", status="200") == 1
    assert v(req, client="ci", operation_area="build", method="POST", status="403") == 1
    assert v(req, client="ci", operation_area="core", method="GET", status="502") == 1
    assert v(req, client="nightly", operation_area="git", method="GET", status="503") == 1
    assert v(req, client="-", operation_area="-", method="GET", status="401") == 1
    assert v("azdo_gateway_denied_total", client="ci", reason="missing_scope") == 1
    assert v("azdo_gateway_denied_total", client="ci", reason="upstream_unreachable") == 1
    assert v("azdo_gateway_denied_total", client="nightly", reason="credential_unavailable") == 1
    assert v("azdo_gateway_denied_total", client="-", reason="unknown_key") == 1
    # token metrics, reported by the token broker through observability.metrics
    assert v("azdo_gateway_token_acquisitions_total", credential="sp", result="ok") >= 1
    assert v("azdo_gateway_token_cache_hits_total", credential="sp") >= 1
    assert 0 < v("azdo_gateway_token_expiry_seconds", credential="sp") <= 3600
    failed = {
        k[1]: n
        for k, n in values.items()
        if k[0] == "azdo_gateway_token_acquisitions_total" and dict(k[1])["credential"] == "broken"
    }
    assert failed and all(dict(labels)["result"] != "ok" for labels in failed)
    assert (
        v("azdo_gateway_report_only_denials_total", client="auditor", reason="missing_scope") == 1
    )
    assert v("azdo_gateway_inflight_requests") == 0

    lines = audit_lines(gw.config_path.parent / "audit.jsonl")
    assert len(lines) == 6
    ok, denied, upstream_err, token_fail, report, unauth = lines
    assert ok["requestId"] == "trace-42"
    assert (ok["client"], ok["authMethod"], ok["operation"]) == (
        "ci",
        "api_key",
        "git.Repositories_List",
    )
    assert (ok["decision"], ok["status"], ok["upstreamStatus"]) == ("allow", 200, 200)
    assert (ok["organization"], ok["project"]) == ("fabrikam", "Fiber")
    assert ok["path"] == "/fabrikam/Fiber/_apis/git/repositories"
    assert ok["credential"] == "sp" and ok["bytesOut"] > 0
    assert (denied["decision"], denied["reason"], denied["status"]) == (
        "deny",
        "missing_scope",
        403,
    )
    assert denied["requestId"] == denied_id and denied["requiredScopes"] == ["vso.build_execute"]
    assert denied["upstreamStatus"] is None and denied["credential"] is None
    assert denied["bytesIn"] == 2
    assert (upstream_err["reason"], upstream_err["status"]) == ("upstream_unreachable", 502)
    assert (token_fail["reason"], token_fail["status"]) == ("credential_unavailable", 503)
    assert (report["decision"], report["reportOnly"], report["reason"]) == (
        "allow",
        True,
        "missing_scope",
    )
    assert (unauth["client"], unauth["reason"], unauth["status"]) == (None, "unknown_key", 401)
    assert len(fake.seen) == 2
    assert fake.seen[0].headers["X-Request-ID"] == "trace-42"
    assert "X-TFS-Session" not in fake.seen[0].headers  # not a GUID: only X-Request-ID
    # the report-mode request had no X-Request-ID: the generated GUID is both headers
    assert fake.seen[1].headers["X-Request-ID"] == report["requestId"]
    assert fake.seen[1].headers["X-TFS-Session"] == report["requestId"]

    # no secret anywhere: keys, the upstream PAT, its base64 form, the query string
    blob = text + (gw.config_path.parent / "audit.jsonl").read_text()
    for secret in (
        key,
        key2,
        key3,
        PAT,
        base64.b64encode(f":{PAT}".encode()).decode(),
        digest,
        "api-version",
    ):
        assert secret not in blob
