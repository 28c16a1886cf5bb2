"""Requests aiohttp's parser refuses: a JSON 400, and no secret in any log line or body.

Each case carries the client's key (as the base64 of HTTP Basic, and in the clear)
inside a malformed request; neither may come back in the answer or reach the log,
in process (caplog) or from `azdo-gateway run` (its stderr)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.listener import problem
from tests.fakes.permissive import PAT, Proxy, start_proxy
from tests.fleet import GatewayProcess
from tests.harness import key_client_policy, new_key, write_config

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly9henVyZS1nYXRld2F5In0.c2lnbmF0dXJlc2lnbmF0dXJl"

# {basic}: "Basic " + base64(":" + key); {key}: the key itself; {token}: a bearer token
CASES = {
    "control character in Authorization": "Authorization: {basic}\x01\r\n",
    "NUL in Authorization": "Authorization: {basic}\x00x\r\n",
    "DEL in Authorization": "Authorization: {basic}\x7f\r\n",
    "obs-fold in Authorization": "Authorization: Basic\r\n {b64}\r\n",
    "over-long Authorization": "Authorization: {basic}" + "A" * 70000 + "\r\n",
    "space in the header name": "Auth orization: {basic}\r\n",
    "no colon": "Authorization {basic}\r\n",
    "bare LF line ends": "Authorization: {basic}\n",
    "CR inside the value": "Authorization: {basic}\rX-Other: 1\r\n",
    "key as Content-Length": "Authorization: {basic}\r\nContent-Length: {key}\r\n",
    "bearer token with a control character": "Authorization: Bearer {token}\x02\r\n",
    "key in a bad header name": "X-{key}\x01: 1\r\n",
    "Content-Length beside chunked": (
        "Authorization: {basic}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    ),
}
BAD_BODY = {
    "key as a chunk size": "{key}\r\nabc\r\n0\r\n\r\n",
    "chunk longer than announced": "3\r\n{key}\r\n0\r\n\r\n",
}


def secrets(key: str) -> list[str]:
    b64 = base64.b64encode(f":{key}".encode()).decode()
    # the key, its base64, and the middle of both (in case a message cuts them)
    return [key, b64, key[5:-5], b64[4:-4], TOKEN, TOKEN[10:-10], PAT]


def fill(template: str, key: str) -> str:
    b64 = base64.b64encode(f":{key}".encode()).decode()
    return template.format(basic="Basic " + b64, b64=b64, key=key, token=TOKEN)


def raw_requests(key: str) -> dict[str, bytes]:
    out = {}
    for name, headers in CASES.items():
        head = "GET /fabrikam/_apis/projects HTTP/1.1\r\nHost: gw\r\n" + fill(headers, key)
        out[name] = (head + "\r\n").encode("latin-1")
    for name, body in BAD_BODY.items():
        head = "POST /fabrikam/_apis/wit/x HTTP/1.1\r\nHost: gw\r\n" + fill(
            "Authorization: {basic}\r\nTransfer-Encoding: chunked\r\n\r\n", key
        )
        out[name] = (head + fill(body, key)).encode("latin-1")
    return out


async def send(url: str, raw: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        async with asyncio.timeout(10):
            return await reader.read()  # the gateway closes the connection after a 400
    finally:
        writer.close()


def assert_clean_400(name: str, answer: bytes, key: str) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", (name, answer[:300])
    assert b"application/json" in head, (name, head)
    text = answer.decode("latin-1")
    for secret in secrets(key):
        assert secret not in text, (name, text[:500])
    doc = json.loads(body)
    assert doc["reason"] == "bad_request" and doc["source"] == "azdo-gateway", doc
    return doc


@pytest.fixture
async def proxy(make_fake_azdo: Any, make_gateway: Any) -> Proxy:
    return await start_proxy(make_fake_azdo, make_gateway)


@pytest.mark.parametrize("name", [*CASES, *BAD_BODY])
async def test_a_malformed_request_gets_json_400_and_no_secret_is_logged(
    proxy: Proxy, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = raw_requests(proxy.key)[name]
    with caplog.at_level(logging.DEBUG):
        answer = await send(proxy.url, raw)
    doc = assert_clean_400(name, answer, proxy.key)
    assert "malformed" in doc["error"] or "request body" in doc["error"], doc
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in secrets(proxy.key):
        assert secret not in logged, (name, logged[-2000:])
    assert "Error handling request" not in logged
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [s for s in proxy.fake.seen if s.body_len] == []  # no bad body went upstream


def test_the_problem_is_named_in_words_never_with_the_bytes() -> None:
    from aiohttp import http_exceptions as he

    b64 = base64.b64encode(b":azgw_0123456789abcdefghijklmnopqrstuv").decode()
    assert problem(he.BadHttpMessage(f"Invalid header value char:\n\n  b'Basic {b64}\\x01'"))
    for exc, words in (
        (
            he.BadHttpMessage(f"Invalid header value char:\n\n  b'{b64}'"),
            "Invalid header value char",
        ),
        (he.LineTooLong(f"Got more than 8190 bytes when reading: b'{b64}'."), None),
        (he.BadHttpMessage(f"{b64} is not valid"), "malformed request"),
        (he.InvalidHeader(f"{b64}"), "Invalid HTTP header"),
        (he.BadStatusLine(f"b'G{b64}T / HTTP/1.1'"), "invalid request line"),
        (ValueError(b64), "malformed request"),
    ):
        said = problem(exc)
        assert b64 not in said and b64[:20] not in said
        if words is not None:
            assert said == words, (exc, said)


async def test_run_logs_no_secret_for_malformed_requests(tmp_path: Path) -> None:
    """The same cases against `azdo-gateway run`, logging at debug: stderr stays clean."""
    key, digest = new_key()
    gateway_yaml = {
        "upstream": {"hosts": {"main": "http://127.0.0.1:9"}},
        "credentials": {"server": {"type": "pat", "pat": PAT}},
        "logging": {"level": "debug"},
    }
    cfg = write_config(tmp_path, gateway_yaml, key_client_policy(digest, scopes=["vso.code"]))
    out = await GatewayProcess.start(cfg)
    try:
        answers = {name: await send(out.url, raw) for name, raw in raw_requests(key).items()}
        await out.wait_for(r"malformed", count=len(CASES))
    finally:
        code = await out.stop(20)
    assert code == 0, "\n".join(out.lines)
    for name, answer in answers.items():
        assert_clean_400(name, answer, key)
    logged = "\n".join(out.lines)
    for secret in secrets(key):
        assert secret not in logged, logged[-3000:]
    assert "Error handling request" not in logged
