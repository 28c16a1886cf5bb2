"""A fault inside the pipeline: JSON 500 internal_error, logged once, recorded as 500.

Only a client that went away is recorded as 499."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from gateway import pipeline
from gateway.pipeline import PIPELINE, chain
from tests.fakes.faults import InjectedFault, raising, raising_mid_answer, with_fault
from tests.harness import new_key
from tests.integration.ops_support import audit_lines, metric_values, use_test_runtime

REPOS = "/fabrikam/Fiber/_apis/git/repositories"


async def start(make_gateway, upstream):
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": upstream.url}},
            "credentials": {"a": {"type": "pat", "pat": "pat-a"}},
        },
        {
            "ci.yaml": {
                "clients": [
                    {
                        "name": "ci",
                        "credential": "a",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "k1", "sha256": digest}],
                    }
                ]
            }
        },
    )
    await use_test_runtime(gw.gateway)
    return gw, {"Authorization": aiohttp.encode_basic_auth("", key)}


def requests_by_status(m: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in m.items():
        if name == "azdo_gateway_requests_total" and value:
            status = dict(labels)["status"]
            out[status] = out.get(status, 0) + value
    return out


async def metrics(s: aiohttp.ClientSession, gw) -> dict:
    async with s.get(gw.admin_url + "/metrics") as r:
        return metric_values(await r.text())


@pytest.mark.parametrize(
    "where", [pipeline.canonicalize, pipeline.authorize, pipeline.forward], ids=lambda s: s.__name__
)
async def test_a_fault_is_a_json_500_logged_once_and_recorded_as_500(
    make_gateway, upstream, caplog, where
):
    gw, auth = await start(make_gateway, upstream)
    stages = with_fault(PIPELINE, before=where, fault=raising(InjectedFault("boom 0xdead")))
    gw.gateway.pipeline = chain(stages)
    async with aiohttp.ClientSession() as s:
        with caplog.at_level(logging.DEBUG):
            async with s.get(gw.url + REPOS, headers={**auth, "X-Request-ID": "fault-1"}) as r:
                assert r.status == 500
                assert r.content_type == "application/json"
                assert r.headers["X-Request-ID"] == "fault-1"
                body = await r.json()
        m = await metrics(s, gw)
    assert body["reason"] == "internal_error" and body["requestId"] == "fault-1"
    assert "boom" not in str(body)  # the client learns nothing of the gateway's inside
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1, [rec.getMessage() for rec in errors]
    assert "fault-1" in errors[0].getMessage()
    assert errors[0].exc_info and isinstance(errors[0].exc_info[1], InjectedFault)
    assert "Error handling request" not in caplog.text
    assert upstream.seen == []
    gw.gateway.observability.audit.flush()
    [line] = audit_lines(gw.config_path.parent / "audit.jsonl")
    assert line["status"] == 500 and line["reason"] == "internal_error", line
    assert line["requestId"] == "fault-1"
    assert requests_by_status(m) == {"500": 1}


async def test_a_fault_after_the_answer_started_cuts_the_connection(make_gateway, upstream, caplog):
    gw, auth = await start(make_gateway, upstream)
    fault = raising_mid_answer(InjectedFault("boom"), b"x" * 100)
    gw.gateway.pipeline = chain(with_fault(PIPELINE, before=pipeline.forward, fault=fault))
    async with aiohttp.ClientSession() as s:
        with caplog.at_level(logging.DEBUG):
            async with s.get(gw.url + REPOS, headers={**auth, "X-Request-ID": "fault-2"}) as r:
                assert r.status == 200  # the status line was out before the fault
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()  # never a complete-looking answer
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "fault-2" in errors[0].getMessage()
    gw.gateway.observability.audit.flush()
    [line] = audit_lines(gw.config_path.parent / "audit.jsonl")
    assert line["status"] == 500 and line["reason"] == "internal_error", line


async def test_a_client_that_goes_away_is_recorded_as_499(make_gateway, upstream, caplog):
    gw, auth = await start(make_gateway, upstream)
    upstream.hold = asyncio.Event()
    observability = gw.gateway.observability
    recorded = asyncio.Event()
    finished = observability.finished

    def finished_and_tell(ctx):
        finished(ctx)
        recorded.set()

    observability.finished = finished_and_tell
    async with aiohttp.ClientSession() as s:
        request = asyncio.ensure_future(s.get(gw.url + REPOS, headers=auth))
        await upstream.wait_for(1)
        request.cancel()  # the client closes its connection while upstream thinks
        with pytest.raises(asyncio.CancelledError):
            await request
        await recorded.wait()  # the gateway's handler was cancelled and has ended
        m = await metrics(s, gw)
    upstream.hold.set()
    observability.audit.flush()
    [line] = audit_lines(gw.config_path.parent / "audit.jsonl")
    assert line["status"] == 499, line
    assert requests_by_status(m) == {"499": 1}
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []
