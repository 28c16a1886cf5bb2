"""A gateway behind a trusted proxy: the throttle and the audit line see the client's address."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import yarl

from tests.harness import key_client_policy, new_key

URL = "/fabrikam/_apis/projects"
INGRESS = "127.0.0.2"  # the trusted proxy's address (a loopback alias)


async def start(make_fake_azdo, make_gateway):
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await make_gateway(
        {
            "listen": {"trusted_proxies": [f"{INGRESS}/32", "10.0.0.0/8"]},
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        key_client_policy(digest, scopes=["vso.project"]),
    )
    return gw, key


async def call(gw, key: str, *, peer: str, headers: dict[str, str] | None = None):
    connector = aiohttp.TCPConnector(local_addr=(peer, 0))
    sent = {"Authorization": aiohttp.encode_basic_auth("", key), **(headers or {})}
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(gw.url + URL, headers=sent) as r:
            body = await r.json(content_type=None) if r.content_type == "application/json" else {}
            return r.status, r.headers["X-Request-ID"], body


def audit(gw, request_id: str) -> dict:
    path = Path(gw.config_path).parent / "audit.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return next(line for line in lines if line["requestId"] == request_id)


async def test_failures_behind_the_proxy_slow_down_that_client_only(make_fake_azdo, make_gateway):
    gw, key = await start(make_fake_azdo, make_gateway)
    gw.gateway.runtime.authn.throttle.max_failures = 5
    tool = {"X-Forwarded-For": "198.51.100.9, 203.0.113.66"}  # spoofed hop, then the real one
    for _ in range(5):
        status, _, _ = await call(gw, new_key()[0], peer=INGRESS, headers=tool)
        assert status == 401
    # the tool behind the ingress is slowed down, whatever it writes left of its address ...
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.66"}
    status, rid, body = await call(gw, key, peer=INGRESS, headers=spoofed)
    assert status == 429 and body["reason"] == "too_many_failed_authentications"
    assert audit(gw, rid)["source"] == "203.0.113.66"
    # ... every other client behind the same ingress is not
    other = {"X-Forwarded-For": "203.0.113.77, 10.1.2.3"}  # a second, internal proxy skipped
    status, rid, _ = await call(gw, key, peer=INGRESS, headers=other)
    assert status == 200
    assert audit(gw, rid)["source"] == "203.0.113.77"
    # and one that reaches the gateway directly cannot claim to be someone else
    status, rid, _ = await call(gw, key, peer="127.0.0.3", headers=tool)
    assert status == 200
    assert audit(gw, rid)["source"] == "127.0.0.3"


async def raw_get(gw, key: str, *, peer: str, headers: dict[str, str]) -> tuple[int, str]:
    """A GET written byte for byte (aiohttp's client refuses control characters)."""
    host, port = host_port(gw.url)
    reader, writer = await asyncio.open_connection(host, port, local_addr=(peer, 0))
    head = f"GET {URL} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    head += f"Authorization: {aiohttp.encode_basic_auth('', key)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write((head + "\r\n").encode("utf-8"))
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    rid = next(
        line.split(b":", 1)[1].strip().decode()
        for line in rest.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    return int(status_line.split()[1]), rid


def host_port(url: str) -> tuple[str, int]:
    parsed = yarl.URL(url)
    assert parsed.host is not None and parsed.port is not None
    return parsed.host, parsed.port


async def test_audit_line_has_source_and_user_agent(make_fake_azdo, make_gateway):
    gw, key = await start(make_fake_azdo, make_gateway)
    # aiohttp refuses C0 controls in a header; C1 ones (the 8-bit CSI) come through as UTF-8
    agent = "VSTS-Agent/3.0 \x9b2J\x85" + "x" * 400
    status, rid = await raw_get(
        gw,
        key,
        peer=INGRESS,
        headers={"Forwarded": 'for="[2001:db8::7]:4711"', "User-Agent": agent},
    )
    assert status == 200
    line = audit(gw, rid)
    assert line["source"] == "2001:db8::7"
    assert line["userAgent"].startswith("VSTS-Agent/3.0 \\x9b2J\\x85xxx")
    assert len(line["userAgent"]) == 256 and line["userAgent"].endswith("...")
    # no header from a trusted peer: the peer itself
    status, rid, _ = await call(gw, key, peer=INGRESS)
    assert audit(gw, rid)["source"] == INGRESS
