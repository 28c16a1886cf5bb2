from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.model import Config, GatewayConfig
from gateway.observability import Observability
from gateway.observability.metrics import REQUEST_LABELS, Metrics
from gateway.types import ClientIdentity, Decision, Match, RequestContext
from tests.samples import REPOSITORIES_LIST

DESIGN_METRICS = {
    "azdo_gateway_requests": "counter",
    "azdo_gateway_request_duration_seconds": "histogram",
    "azdo_gateway_upstream_duration_seconds": "histogram",
    "azdo_gateway_denied": "counter",
    "azdo_gateway_token_acquisitions": "counter",
    "azdo_gateway_token_cache_hits": "counter",
    "azdo_gateway_token_expiry_seconds": "gauge",
    "azdo_gateway_inflight_requests": "gauge",
    "azdo_gateway_upstream_throttled": "counter",
    "azdo_gateway_config_reloads": "counter",
}

OP = REPOSITORIES_LIST


def families(m: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def ctx(**kw: object) -> RequestContext:
    c = RequestContext(request_id="r1", method=str(kw.pop("method", "GET")))
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_every_design_metric_is_exported_with_its_type():
    m = Metrics(CollectorRegistry(), names=["ci"])
    m.request_finished(ctx(status=200), 0.01)
    m.token_expiry("build-sp", time.time() + 100)
    fams = families(m)
    for name, kind in DESIGN_METRICS.items():
        assert name in fams, name
        assert fams[name].type == kind, name


def test_request_labels_are_bounded():
    m = Metrics(CollectorRegistry(), names=["ci"])
    m.known(clients=["ci"], credentials=["build-sp"])
    ident = ClientIdentity(client="ci", auth_method="api_key", subject="k1")
    match = Match(OP, {}, "fabrikam", "Fiber")
    m.request_finished(ctx(identity=ident, match=match, status=200, path="/fabrikam/x"), 0.02)
    m.request_finished(
        ctx(method="BREW", status=400, path="/a/../../etc/passwd", error_reason="ambiguous_path"),
        0.001,
    )
    m.request_finished(
        ctx(identity=ClientIdentity("gone", "api_key", "k"), status=403, error_reason="<script>"),
        0.001,
    )
    assert (
        sample(
            m,
            "azdo_gateway_requests_total",
            client="ci",
            operation_area="git",
            method="GET",
            status="200",
        )
        == 1
    )
    assert (
        sample(
            m,
            "azdo_gateway_requests_total",
            client="-",
            operation_area="-",
            method="other",
            status="400",
        )
        == 1
    )
    assert sample(m, "azdo_gateway_denied_total", client="-", reason="ambiguous_path") == 1
    assert sample(m, "azdo_gateway_denied_total", client="other", reason="other") == 1
    text = m.render().decode()
    assert "passwd" not in text and "BREW" not in text and "gone" not in text
    assert "<script>" not in text


def test_requests_total_renders_as_the_counter_it_replaces(monkeypatch):
    """azdo_gateway_requests_total is read off request_duration at scrape time; its
    text is what a Counter incremented once per request would render."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # the _created samples
    plain_registry = CollectorRegistry()
    plain = Counter(
        "azdo_gateway_requests_total",
        "Requests answered, by client, operation area, method and status.",
        REQUEST_LABELS,
        registry=plain_registry,
    )
    m = Metrics(CollectorRegistry(), names=["ci"])
    text = m.render().decode()
    assert text.startswith(generate_latest(plain_registry).decode())  # no request yet
    ci = ClientIdentity(client="ci", auth_method="api_key", subject="k1")
    match = Match(OP, {}, "fabrikam", "Fiber")
    requests = [
        (ctx(identity=ci, match=match, status=200), ("ci", "git", "GET", "200")),
        (ctx(method="BREW", status=400, error_reason="x"), ("-", "-", "other", "400")),
        (ctx(identity=ci, match=match, status=200), ("ci", "git", "GET", "200")),
        (ctx(identity=ClientIdentity("gone", "api_key", "k")), ("other", "-", "GET", "-")),
        (ctx(identity=ci, method="POST", status=201), ("ci", "-", "POST", "201")),
    ]
    for c, labels in requests:
        m.request_finished(c, 0.01)
        plain.labels(*labels).inc()
    expected = generate_latest(plain_registry).decode()
    text = m.render().decode()
    assert text.startswith(expected)  # the first family, as it was registered first
    assert text.index("azdo_gateway_request_duration_seconds") == len(expected) + len("# HELP ")


def test_a_client_added_by_a_reload_gets_its_own_label():
    m = Metrics(CollectorRegistry(), names=["ci"])
    newcomer = ctx(identity=ClientIdentity("nightly", "api_key", "k"), status=200)
    m.request_finished(newcomer, 0.01)  # not configured (yet): counted as "other"
    m.known(clients=["ci", "nightly"])
    m.request_finished(newcomer, 0.01)
    m.request_finished(newcomer, 0.01)
    requests = "azdo_gateway_requests_total"
    assert sample(m, requests, client="other", status="200") == 1
    assert sample(m, requests, client="nightly", status="200") == 2
    m.known(clients=["ci"])  # and removed again
    m.request_finished(newcomer, 0.01)
    assert sample(m, requests, client="other", status="200") == 2


def test_methods_a_caller_makes_up_share_one_label_and_one_cache_entry():
    m = Metrics(CollectorRegistry(), names=["ci"])
    for i in range(500):
        m.request_finished(ctx(method=f"X{i}" * 100, status=405), 0.001)
    assert len(m._finished) == 1
    assert sample(m, "azdo_gateway_requests_total", method="other", status="405") == 500


def test_token_events_and_expiry_is_seconds_to_go():
    m = Metrics(CollectorRegistry())
    m.known(credentials=["build-sp"])
    m.token_acquired("build-sp", "ok")
    m.token_acquired("build-sp", "AADSTS7000215 secret=xyz")  # not a bounded result
    m.token_cache_hit("build-sp")
    m.token_expiry("build-sp", time.time() + 3600)
    assert (
        sample(m, "azdo_gateway_token_acquisitions_total", credential="build-sp", result="ok") == 1
    )
    assert sample(m, "azdo_gateway_token_acquisitions_total", result="other") == 1
    assert sample(m, "azdo_gateway_token_cache_hits_total", credential="build-sp") == 1
    left = sample(m, "azdo_gateway_token_expiry_seconds", credential="build-sp")
    assert left is not None and 3590 < left <= 3600
    assert "xyz" not in m.render().decode()


def test_report_mode_denials_and_reloads_and_throttling():
    m = Metrics(CollectorRegistry(), names=["ci"])
    ident = ClientIdentity(client="ci", auth_method="api_key", subject="k1")
    d = Decision(True, "missing_scope", ("vso.code",), report_only=True)
    m.request_finished(ctx(identity=ident, decision=d, status=200), 0.01)
    m.reloaded(True)
    m.reloaded(False)
    m.throttled("build-sp", "ci")
    assert (
        sample(m, "azdo_gateway_report_only_denials_total", client="ci", reason="missing_scope")
        == 1
    )
    assert sample(m, "azdo_gateway_denied_total", client="ci") is None
    assert sample(m, "azdo_gateway_config_reloads_total", result="success") == 1
    assert sample(m, "azdo_gateway_config_reloads_total", result="failure") == 1
    assert (
        sample(m, "azdo_gateway_upstream_throttled_total", credential="build-sp", client="ci") == 1
    )


def test_inflight_goes_up_and_down():
    m = Metrics(CollectorRegistry())
    m.inflight.inc()
    m.inflight.inc()
    m.inflight.dec()
    assert sample(m, "azdo_gateway_inflight_requests") == 1


WORKER = textwrap.dedent("""
    import sys, time
    from prometheus_client import CollectorRegistry
    from gateway.observability.metrics import Metrics
    from gateway.types import RequestContext
    m = Metrics(CollectorRegistry())
    m.known(clients=["ci"], credentials=["sp"])
    for _ in range(int(sys.argv[1])):
        c = RequestContext(request_id="x", method="GET"); c.status = 200
        m.request_finished(c, 0.01)
    m.inflight.inc()
    m.token_expiry("sp", time.time() + 50)
    sys.stdout.write(m.render().decode())
""")


@pytest.mark.parametrize("dead", [False, True])
def test_multiprocess_counters_add_up_and_survive_dead_workers(tmp_path, dead):
    """Two worker processes write; a third renders the sum. A dead worker's
    counters stay (counters never go backwards); its live gauges go."""
    from prometheus_client.multiprocess import mark_process_dead

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    pids = []
    for n in (3, 4):
        p = subprocess.run(
            [sys.executable, "-c", WORKER, str(n)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=os.getcwd(),
        )
        assert "azdo_gateway_requests_total" in p.stdout
        pids.append(p)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, "0"], env=env, check=True, capture_output=True, text=True
    ).stdout
    values = {}
    for fam in text_string_to_metric_families(out):
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    key = (
        "azdo_gateway_requests_total",
        (("client", "-"), ("method", "GET"), ("operation_area", "-"), ("status", "200")),
    )
    assert values[key] == 7
    expiry = values[("azdo_gateway_token_expiry_seconds", (("credential", "sp"),))]
    assert 0 < expiry <= 50
    if dead:
        for f in os.listdir(tmp_path):
            if f.startswith("gauge_live"):
                pid = int(f.rsplit("_", 1)[1].split(".")[0])
                mark_process_dead(pid, str(tmp_path))
        out = subprocess.run(
            [sys.executable, "-c", WORKER, "0"], env=env, check=True, capture_output=True, text=True
        ).stdout
        fams = {f.name: f for f in text_string_to_metric_families(out)}
        assert fams["azdo_gateway_requests"].type == "counter"
        assert [
            s.value for s in fams["azdo_gateway_requests"].samples if s.name.endswith("_total")
        ] == [7]
        # only the rendering process itself is still live
        assert [s.value for s in fams["azdo_gateway_inflight_requests"].samples] == [1]


def _observability() -> Observability:
    gateway = GatewayConfig.model_validate({"audit": {"file": ""}})
    config = Config(path=Path("gateway.yaml"), gateway=gateway, clients=(), routes=())
    return Observability(config, registry=CollectorRegistry())


def test_inflight_of_requests_observed_without_an_event_loop():
    obs = _observability()
    obs.started(ctx())
    obs.started(ctx())
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 2
    obs.finished(ctx(status=200))
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 1


async def test_inflight_is_written_once_the_loop_turns_and_is_current_on_scrape():
    obs = _observability()
    requests = [ctx() for _ in range(3)]
    for c in requests:
        obs.started(c)
    obs.finished(requests[0])
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 0  # not yet written
    await asyncio.sleep(0)
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 2
    obs.finished(requests[1])
    response = await obs.metrics_view(make_mocked_request("GET", "/metrics"))
    assert b"\nazdo_gateway_inflight_requests 1.0\n" in response.body
    await asyncio.sleep(0)
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 1
    obs.finished(requests[2])
    await asyncio.sleep(0)
    assert sample(obs.metrics, "azdo_gateway_inflight_requests") == 0


FORKING_WORKER = textwrap.dedent("""
    import os
    from gateway.observability import metrics
    from gateway.types import RequestContext
    metrics._PID.value = 4242  # the remembered id, not asked again per write
    m = metrics.Metrics()
    c = RequestContext(request_id="r1", method="GET")
    c.status, c.upstream_seconds = 200, 0.01
    m.request_finished(c, 0.02)
    pid = os.fork()
    if pid == 0:  # a forked child writes to files of its own id
        m.request_finished(c, 0.02)
        os._exit(0)
    os.waitpid(pid, 0)
    print(pid)
""")


def test_multiprocess_values_use_the_remembered_process_id_and_follow_a_fork(tmp_path):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    child = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    files = {f.name for f in tmp_path.iterdir()}
    assert {"histogram_4242.db", f"histogram_{child}.db"} <= files
