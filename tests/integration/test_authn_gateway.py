"""Gateway keys through the running gateway: every way a PAT is sent, and every way to fail."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import secrets
from pathlib import Path

import aiohttp
import pytest

from gateway.authn.api_key import key_sha256, new_key

AUTHN_REASONS = {
    "unauthenticated",
    "malformed_authorization",
    "unknown_key",
    "key_expired",
    "pat_not_accepted",
    "invalid_token",
    "token_expired",
    "too_many_failed_authentications",
}
URL = "/fabrikam/_apis/projects"


def basic(user: str, password: str) -> str:
    return aiohttp.encode_basic_auth(user, password)


async def start(make_fake_azdo, make_gateway):
    fake = await make_fake_azdo()
    keys = {name: new_key() for name in ("current", "next", "expired", "revoked")}
    yesterday = dt.date.today() - dt.timedelta(days=2)
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        {
            "ci.yaml": {
                "clients": [
                    {
                        "name": "ci",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "api_keys": [
                            {"id": "ci-current", "sha256": key_sha256(keys["current"])},
                            {
                                "id": "ci-next",
                                "sha256": key_sha256(keys["next"]),
                                "expires": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
                            },
                            {
                                "id": "ci-expired",
                                "sha256": key_sha256(keys["expired"]),
                                "expires": yesterday.isoformat(),
                            },
                        ],
                    }
                ]
            }
        },
    )
    return fake, gw, keys


async def call(gw, headers=None, *, local: str | None = None) -> tuple[int, dict, dict]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else None
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(gw.url + URL, headers=headers) as r:
            body = await r.json(content_type=None) if r.content_type == "application/json" else {}
            return r.status, dict(r.headers), body


def audit_lines(gw) -> list[dict]:
    path = Path(gw.config_path).parent / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "how", ["basic-any-user", "basic-empty-user", "basic-key-as-user", "bearer", "rotated-key"]
)
async def test_key_is_accepted_wherever_a_pat_is_sent(make_fake_azdo, make_gateway, how):
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    key = keys["next"] if how == "rotated-key" else keys["current"]
    header = {
        "basic-any-user": basic("jenkins", key),
        "basic-empty-user": basic("", key),
        "basic-key-as-user": basic(key, ""),
        "bearer": f"Bearer {key}",
        "rotated-key": basic("git", key),
    }[how]
    status, headers, body = await call(gw, {"Authorization": header})
    assert status not in (401, 429) and body.get("reason") not in AUTHN_REASONS
    line = next(a for a in audit_lines(gw) if a["requestId"] == headers["X-Request-ID"])
    expected_id = "ci-next" if how == "rotated-key" else "ci-current"
    assert (line["client"], line["authMethod"], line["subject"]) == ("ci", "api_key", expected_id)
    assert key not in json.dumps(audit_lines(gw))
    for seen in fake.seen:
        assert key not in json.dumps(seen.headers)
        assert "Authorization" not in seen.headers or seen.headers["Authorization"] != header


@pytest.mark.parametrize(
    "which,reason",
    [("expired", "key_expired"), ("revoked", "unknown_key"), ("unknown", "unknown_key")],
)
async def test_bad_keys_get_401_with_reason_and_a_basic_challenge(
    make_fake_azdo, make_gateway, which, reason
):
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    key = keys.get(which) or new_key()
    status, headers, body = await call(gw, {"Authorization": basic("", key)})
    assert status == 401 and body["reason"] == reason
    assert headers["WWW-Authenticate"].startswith('Basic realm="azdo-gateway"')
    assert body["source"] == "azdo-gateway" and key not in json.dumps(body)
    assert fake.seen == []


def legacy_pat() -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52))


def current_pat() -> str:
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    head = "".join(secrets.choice(b64) for _ in range(52))
    return (
        head
        + "JQQJ99BA"
        + "A" * 12
        + "ASAA"
        + "AZDO"
        + "".join(secrets.choice(b64) for _ in range(4))
    )


@pytest.mark.parametrize("make_pat", [legacy_pat, current_pat])
@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_a_real_pat_is_refused_never_forwarded_never_logged(
    make_fake_azdo, make_gateway, caplog, make_pat, scheme
):
    caplog.set_level(logging.DEBUG)
    fake, gw, _ = await start(make_fake_azdo, make_gateway)
    pat = make_pat()
    header = basic("me@example.com", pat) if scheme == "basic" else f"Bearer {pat}"
    status, headers, body = await call(gw, {"Authorization": header})
    assert status == 401 and body["reason"] == "pat_not_accepted"
    assert "gateway key" in body["error"] and pat not in json.dumps(body)
    assert "WWW-Authenticate" in headers
    assert fake.seen == []
    assert pat not in caplog.text and header not in caplog.text
    lines = audit_lines(gw)
    assert lines and lines[-1]["reason"] == "pat_not_accepted"
    assert pat not in json.dumps(lines)


@pytest.mark.parametrize(
    "header",
    [
        "Basic %%%notbase64%%%",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"user:\xc3\x28").decode(),
        "Bearer two words",
        "Bearer " + "x" * 7000 + " y",
    ],
)
async def test_malformed_authorization_is_401_never_500(make_fake_azdo, make_gateway, header):
    fake, gw, _ = await start(make_fake_azdo, make_gateway)
    status, headers, body = await call(gw, {"Authorization": header})
    assert status == 401 and body["reason"] == "malformed_authorization"
    assert "WWW-Authenticate" in headers and fake.seen == []


async def test_several_authorization_headers_are_malformed(make_fake_azdo, make_gateway):
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    two = [("Authorization", basic("", keys["current"])), ("Authorization", "Bearer other")]
    status, _, body = await call(gw, two)
    assert status == 401 and body["reason"] == "malformed_authorization"
    assert "exactly one" in body["error"]


async def raw_request(gw, header_line: bytes) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET "
        + URL.encode()
        + b" HTTP/1.1\r\nHost: gw\r\n"
        + header_line
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_non_utf8_and_oversized_headers_on_the_wire_are_4xx_not_500(
    make_fake_azdo, make_gateway
):
    fake, gw, _ = await start(make_fake_azdo, make_gateway)
    answer = await raw_request(gw, b"Authorization: Bearer k\xff\xfe")
    assert answer.startswith(b"HTTP/1.1 401") and b"malformed_authorization" in answer
    answer = await raw_request(gw, b"Authorization: Bearer " + b"k" * 20000)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500 and status != 404
    assert fake.seen == []


async def test_missing_credential_is_a_challenge_not_counted_as_failure(
    make_fake_azdo, make_gateway
):
    _, gw, keys = await start(make_fake_azdo, make_gateway)
    for _ in range(30):  # git always asks without credentials first
        status, headers, body = await call(gw)
        assert status == 401 and body["reason"] == "unauthenticated"
        assert headers["WWW-Authenticate"].startswith('Basic realm="azdo-gateway"')
    status, _, _ = await call(gw, {"Authorization": basic("", keys["current"])})
    assert status != 401 and status != 429


async def test_repeated_failures_slow_down_that_source_and_no_other(make_fake_azdo, make_gateway):
    _, gw, keys = await start(make_fake_azdo, make_gateway)
    limit = gw.gateway.runtime.authn.throttle.max_failures
    for _ in range(limit):
        status, _, body = await call(gw, {"Authorization": basic("", new_key())}, local="127.0.0.2")
        assert status == 401
    # now even the right key is slowed down from that source ...
    status, headers, body = await call(
        gw, {"Authorization": basic("", keys["current"])}, local="127.0.0.2"
    )
    assert status == 429 and body["reason"] == "too_many_failed_authentications"
    assert 1 <= int(headers["Retry-After"]) <= 60
    # ... but other sources are not affected
    status, _, body = await call(
        gw, {"Authorization": basic("", keys["current"])}, local="127.0.0.3"
    )
    assert status not in (401, 429)


async def test_reload_adds_and_revokes_keys_and_keeps_the_slowdown(make_fake_azdo, make_gateway):
    import yaml

    from gateway.reload import Reloader

    _, gw, keys = await start(make_fake_azdo, make_gateway)
    limit = gw.gateway.runtime.authn.throttle.max_failures
    for _ in range(limit):
        await call(gw, {"Authorization": basic("", new_key())}, local="127.0.0.2")
    added = new_key()
    policy_file = Path(gw.config_path).parent / "policies" / "ci.yaml"
    doc = yaml.safe_load(policy_file.read_text())
    api_keys = doc["clients"][0]["api_keys"]
    doc["clients"][0]["api_keys"] = [k for k in api_keys if k["id"] != "ci-current"] + [
        {"id": "ci-added", "sha256": key_sha256(added)}
    ]
    policy_file.write_text(yaml.safe_dump(doc))
    assert await Reloader(gw.gateway, gw.config_path).reload("test")
    status, _, body = await call(gw, {"Authorization": basic("", keys["current"])})
    assert status == 401 and body["reason"] == "unknown_key"  # revoked by the reload
    status, headers, _ = await call(gw, {"Authorization": basic("", added)})
    assert status not in (401, 429)
    assert audit_lines(gw)[-1]["subject"] == "ci-added"
    status, _, body = await call(gw, {"Authorization": basic("", added)}, local="127.0.0.2")
    assert status == 429  # the reload did not forgive the guessing source


async def test_refusals_are_counted_by_reason_and_secrets_stay_out_of_metrics(
    make_fake_azdo, make_gateway
):
    _, gw, keys = await start(make_fake_azdo, make_gateway)
    pat = legacy_pat()
    for header in (basic("", pat), basic("", keys["expired"]), "Basic %%%", f"Bearer {new_key()}"):
        assert (await call(gw, {"Authorization": header}))[0] == 401
    async with aiohttp.ClientSession() as s, s.get(gw.admin_url + "/metrics") as r:
        text = await r.text()
    for reason in ("pat_not_accepted", "key_expired", "malformed_authorization", "unknown_key"):
        assert f'reason="{reason}"' in text, reason
    assert pat not in text and keys["expired"] not in text
