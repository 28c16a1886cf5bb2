"""Known access-control bypass attempts against a client that may only read code.

Every attempt goes over a raw socket (so that nothing normalizes it on the way)
to a running gateway whose every upstream host is a recording fake Azure DevOps.
Each must be refused with a 4xx, and the fake must see nothing at all. A final
control request proves the same key and setup do reach upstream when allowed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.config.model import DEFAULT_HOSTS
from tests.harness import new_key

P = "/fabrikam/Fiber"
PUSH = f"{P}/_apis/git/repositories/r1/pushes"  # needs vso.code_write
BUILDS = f"{P}/_apis/build/builds"  # needs vso.build


@dataclass(frozen=True)
class Attempt:
    name: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: bytes | None = None  # the whole request, for malformed framing
    reason: str | None = None  # expected JSON reason, when the gateway answers itself


def a(
    name: str,
    method: str,
    target: str,
    *headers: tuple[str, str],
    reason: str | None = None,
    body: bytes = b"",
) -> Attempt:
    return Attempt(name, method, target, tuple(headers), body, None, reason)


def raw(name: str, request: str) -> Attempt:
    return Attempt(name, "", "", raw=request.encode("latin-1"))


OVR = "X-HTTP-Method-Override"
ATTEMPTS = [
    # plain privilege: the operations exist, the client lacks their scopes
    a("write-scope", "POST", PUSH, reason="missing_scope"),
    a("manage-scope", "DELETE", f"{P}/_apis/git/repositories/r1", reason="missing_scope"),
    a("other-area", "GET", BUILDS, reason="missing_scope"),
    a("other-host", "GET", f"/_hosts/vsrm{P}/_apis/release/releases", reason="missing_scope"),
    a("git-push", "POST", f"{P}/_git/repo/git-receive-pack", reason="missing_scope"),
    a(
        "git-push-advert",
        "GET",
        f"{P}/_git/repo/info/refs?service=git-receive-pack",
        reason="missing_scope",
    ),
    a(
        "git-push-advert-case",
        "GET",
        f"{P}/_git/repo/info/refs?Service=GIT-RECEIVE-PACK",
        reason="missing_scope",
    ),
    a(
        "git-service-twice",
        "GET",
        f"{P}/_git/repo/info/refs?service=git-upload-pack&service=git-receive-pack",
        reason="ambiguous_path",
    ),
    a("lfs-upload", "PUT", f"{P}/_git/repo/info/lfs/objects/abc", reason="missing_scope"),
    a("unscoped-op", "GET", "/fabrikam/_apis/securitynamespaces/x", reason="missing_scope"),
    a("no-operation", "GET", f"{P}/_apis/not/an/api", reason="no_matching_operation"),
    # encoding tricks
    a(
        "encoded-unreserved",
        "POST",
        f"{P}/%5Fapis/%67it/repositories/r1/pushes",
        reason="missing_scope",
    ),
    a(
        "encoded-slash",
        "GET",
        f"{P}/_apis/git/repositories/r1%2F..%2F..%2F..%2Fbuild%2Fbuilds",
        reason="ambiguous_path",
    ),
    a("encoded-slash-lower", "GET", f"{P}/_apis/git/repositories%2fr1", reason="ambiguous_path"),
    a(
        "encoded-backslash",
        "GET",
        f"{P}/_apis/git/repositories/r1%5C..%5Cbuild",
        reason="ambiguous_path",
    ),
    a(
        "raw-backslash",
        "GET",
        f"{P}/_apis/git/repositories\\..\\..\\_apis\\build\\builds",
        reason="ambiguous_path",
    ),
    a("encoded-nul", "GET", f"{P}/_apis/git/repositories/r1%00/pushes", reason="ambiguous_path"),
    a("encoded-crlf", "GET", f"{P}/_apis/git/repositories/r1%0d%0aX:1", reason="ambiguous_path"),
    a("invalid-percent", "GET", f"{P}/_apis/git/repositories/%zz", reason="ambiguous_path"),
    a(
        "overlong-utf8-dot",
        "GET",
        f"{P}/_apis/git/repositories/%c0%ae%c0%ae/%c0%ae%c0%ae/build",
        reason="ambiguous_path",
    ),
    a("invalid-utf8", "GET", f"{P}/_apis/git/repositories/%ff", reason="ambiguous_path"),
    a(
        "double-encoded-dots",
        "GET",
        f"{P}/_apis/git/repositories/%252e%252e/pushes",
        reason="ambiguous_path",
    ),
    a(
        "double-encoded-slash",
        "GET",
        f"{P}/_apis/git/repositories/r1%252F..%252Fx",
        reason="ambiguous_path",
    ),
    # dot segments
    a(
        "dot-dot",
        "GET",
        f"{P}/_apis/git/repositories/../../../_apis/build/builds",
        reason="ambiguous_path",
    ),
    a(
        "encoded-dot-dot",
        "GET",
        f"{P}/_apis/git/repositories/%2e%2e/%2E%2e/x",
        reason="ambiguous_path",
    ),
    a("half-encoded-dot", "GET", f"{P}/_apis/git/repositories/.%2e/x", reason="ambiguous_path"),
    a("single-dot", "POST", f"{P}/_apis/git/./repositories/r1/pushes", reason="ambiguous_path"),
    a(
        "dot-dot-semicolon",
        "GET",
        f"{P}/_apis/git/repositories/..;/..;/build/builds",
        reason="ambiguous_path",
    ),
    a("trailing-dot-dot", "GET", f"{P}/_apis/git/repositories/..", reason="ambiguous_path"),
    # empty segments and slashes
    a("double-slash-start", "GET", f"/{BUILDS}", reason="ambiguous_path"),
    a("double-slash-inner", "GET", f"{P}/_apis//build/builds", reason="ambiguous_path"),
    a(
        "matrix-parameter",
        "POST",
        f"{P}/_apis/git/repositories;x=1",
        reason="no_matching_operation",
    ),
    a("trailing-dot", "POST", f"{PUSH}.", reason="no_matching_operation"),
    # case games
    a("upper-case", "POST", PUSH.upper(), reason="missing_scope"),
    a("mixed-case", "GET", "/Fabrikam/FIBER/_Apis/BuilD/BUILDS", reason="missing_scope"),
    a("lower-method", "delete", f"{P}/_apis/git/repositories/r1"),
    # method overrides
    a(
        "override-to-delete",
        "POST",
        f"{P}/_apis/git/repositories/r1",
        (OVR, "DELETE"),
        reason="missing_scope",
    ),
    a(
        "override-on-get",
        "GET",
        f"{P}/_apis/git/repositories/r1",
        (OVR, "DELETE"),
        reason="method_override_not_allowed",
    ),
    a("override-to-get", "POST", PUSH, (OVR, "GET"), reason="method_override_not_allowed"),
    a(
        "x-http-method-to-get",
        "POST",
        PUSH,
        ("X-HTTP-Method", "GET"),
        reason="method_override_not_allowed",
    ),
    a(
        "x-method-override-to-get",
        "POST",
        PUSH,
        ("X-Method-Override", "GET"),
        reason="method_override_not_allowed",
    ),
    a(
        "override-underscore",
        "GET",
        f"{P}/_apis/git/repositories/r1",
        ("X_HTTP_Method_Override", "DELETE"),
        reason="method_override_not_allowed",
    ),
    a(
        "override-conflict",
        "POST",
        PUSH,
        (OVR, "PATCH"),
        ("X-Method-Override", "GET"),
        reason="method_override_not_allowed",
    ),
    a("override-list", "POST", PUSH, (OVR, "GET, POST"), reason="method_override_not_allowed"),
    # rewritten targets
    a(
        "x-original-url",
        "GET",
        f"{P}/_apis/git/repositories",
        ("X-Original-URL", BUILDS),
        reason="ambiguous_path",
    ),
    a(
        "x-rewrite-url",
        "GET",
        f"{P}/_apis/git/repositories",
        ("X-Rewrite-URL", BUILDS),
        reason="ambiguous_path",
    ),
    a(
        "x-original-url-underscore",
        "GET",
        f"{P}/_apis/git/repositories",
        ("X_Original_URL", BUILDS),
        reason="ambiguous_path",
    ),
    # upstream host selection
    a("unknown-host", "GET", f"/_hosts/evil.example{BUILDS}", reason="bad_request"),
    a("nested-hosts", "GET", f"/_hosts/vsrm/_hosts/main{BUILDS}", reason="ambiguous_path"),
    a("encoded-hosts-escape", "GET", f"/_hosts/%2e%2e{BUILDS}", reason="ambiguous_path"),
    a(
        "host-header",
        "GET",
        f"{P}/_apis/release/releases",
        ("Host", "vsrm.dev.azure.com"),
        reason="no_matching_operation",
    ),
    # always-denied endpoints
    a("soap", "POST", "/fabrikam/_ws/ClientService.asmx", reason="soap_not_supported"),
    a("soap-asmx-anywhere", "POST", f"{P}/_apis/git/Repository.ASMX", reason="soap_not_supported"),
    a("batch", "POST", "/fabrikam/_apis/wit/$batch", reason="batch_not_allowed"),
    a("batch-encoded", "POST", f"{P}/_apis/wit/%24batch", reason="batch_not_allowed"),
    a(
        "hierarchy-query",
        "POST",
        "/fabrikam/_apis/Contribution/HierarchyQuery",
        reason="batch_not_allowed",
    ),
    # request-target forms and framing
    raw("absolute-form", "GET http://dev.azure.com{B} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"),
    raw(
        "absolute-form-other-host",
        "GET https://vsrm.dev.azure.com{P}/_apis/release/releases HTTP/1.1\r\n"
        "Host: x\r\n{AUTH}\r\n",
    ),
    raw(
        "authority-form",
        "CONNECT dev.azure.com:443 HTTP/1.1\r\nHost: dev.azure.com:443\r\n{AUTH}\r\n",
    ),
    raw("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"),
    raw(
        "duplicate-host",
        "GET {P}/_apis/git/repositories HTTP/1.1\r\nHost: a\r\nHost: b\r\n{AUTH}\r\n",
    ),
    raw(
        "duplicate-authorization",
        "GET {B} HTTP/1.1\r\nHost: x\r\n{AUTH}Authorization: Basic OmJvZ3Vz\r\n\r\n",
    ),
    raw(
        "cl-and-te",
        "POST {PUSH} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    raw(
        "two-content-lengths",
        "POST {PUSH} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 0\r\nContent-Length: 44\r\n\r\n",
    ),
    raw(
        "te-obfuscated",
        "POST {PUSH} HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: xchunked\r\n\r\n",
    ),
    raw(
        "smuggled-in-get",
        "GET {B} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 0\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST {PUSH} HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    raw(
        "obs-fold-override",
        "POST {PUSH} HTTP/1.1\r\nHost: x\r\n{AUTH}X-HTTP-Method-Override:\r\n GET\r\n\r\n",
    ),
    raw("space-in-target", "GET {P}/_apis/git/repositories /x HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"),
    raw("tab-in-target", "GET {P}/_apis/git/repositories\t/x HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"),
    raw("fragment", "GET {B}#frag HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"),
    raw("http-0.9-ish", "GET {B}\r\n\r\n"),
]


async def send(url: str, data: bytes) -> tuple[int, dict[str, Any] | None]:
    """Send raw bytes; return the status of the first response and its JSON body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if data.startswith(b"HEAD "):
            length = 0  # a HEAD answer has no body
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        return status, doc
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return 400, None  # the server dropped a request it could not parse
    finally:
        writer.close()


def build(attempt: Attempt, auth: str) -> bytes:
    if attempt.raw is not None:
        text = attempt.raw.decode("latin-1")
        for key, value in (
            ("{AUTH}", f"Authorization: {auth}\r\n"),
            ("{PUSH}", PUSH),
            ("{B}", BUILDS),
            ("{P}", P),
        ):
            text = text.replace(key, value)
        return text.encode("latin-1")
    lines = [f"{attempt.method} {attempt.target} HTTP/1.1", f"Authorization: {auth}"]
    if not any(k.lower() == "host" for k, _ in attempt.headers):
        lines.append("Host: gateway.test")
    lines += [f"{k}: {v}" for k, v in attempt.headers]
    lines += [f"Content-Length: {len(attempt.body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + attempt.body


@pytest.fixture
async def setup(make_fake_azdo: Any, make_gateway: Any) -> tuple[Any, Any, str]:
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await _gateway(make_gateway, fake, digest)
    auth = "Basic " + base64.b64encode(f":{key}".encode()).decode()
    return fake, gw, auth


async def _gateway(make_gateway: Any, fake: Any, digest: str) -> Any:
    return await make_gateway(
        {
            "upstream": {"hosts": {name: fake.url for name in DEFAULT_HOSTS}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        {
            "readers.yaml": {
                "clients": [
                    {
                        "name": "code-reader",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "k1", "sha256": digest}],
                    }
                ]
            }
        },
    )


def test_there_are_enough_attempts() -> None:
    assert len(ATTEMPTS) >= 40
    assert len({x.name for x in ATTEMPTS}) == len(ATTEMPTS)


async def test_bypass_attempts_never_reach_upstream(setup: tuple[Any, Any, str]) -> None:
    fake, gw, auth = setup
    outcomes = {}
    for attempt in ATTEMPTS:
        status, doc = await send(gw.url, build(attempt, auth))
        outcomes[attempt.name] = (status, (doc or {}).get("reason"))
    leaked = [(s.method, s.path, s.query) for s in fake.seen]
    assert leaked == [], f"reached upstream: {leaked}"
    bad = {n: o for n, o in outcomes.items() if not 400 <= o[0] < 500}
    assert bad == {}, f"not refused with a 4xx: {bad}"
    wrong = {
        x.name: outcomes[x.name]
        for x in ATTEMPTS
        if x.reason is not None and outcomes[x.name][1] != x.reason
    }
    assert wrong == {}, f"refused for another reason than expected: {wrong}"
    # control: the same key and gateway do forward what the policy allows
    status, doc = await send(
        gw.url, build(a("allowed", "GET", f"{P}/_apis/git/repositories"), auth)
    )
    assert status == 200 and doc is not None and doc["path"] == f"{P}/_apis/git/repositories"
    assert [(s.method, s.path) for s in fake.seen] == [("GET", f"{P}/_apis/git/repositories")]


async def test_allowed_requests_reach_upstream_in_the_form_authorized(
    setup: tuple[Any, Any, str],
) -> None:
    fake, gw, auth = setup
    cases = [
        (
            a("unreserved", "GET", f"{P}/%5Fapis/git/repositories"),
            "GET",
            f"{P}/_apis/git/repositories",
        ),
        (
            a("case", "GET", "/FABRIKAM/fiber/_APIS/git/Repositories/R1"),
            "GET",
            "/FABRIKAM/fiber/_APIS/git/Repositories/R1",
        ),
        (
            a("fetch", "POST", f"{P}/_git/repo/git-upload-pack"),
            "POST",
            f"{P}/_git/repo/git-upload-pack",
        ),
        (a("discovery", "OPTIONS", "/fabrikam/_apis"), "OPTIONS", "/fabrikam/_apis"),
        (
            a("space", "GET", "/fabrikam/Fabrikam%20Fiber/_apis/git/repositories"),
            "GET",
            "/fabrikam/Fabrikam%20Fiber/_apis/git/repositories",
        ),
    ]
    for attempt, method, path in cases:
        status, _ = await send(gw.url, build(attempt, auth))
        assert status == 200, attempt.name
        seen = fake.seen[-1]
        assert (seen.method, seen.path) == (method, path), attempt.name


_BASES = [
    "/fabrikam/Fiber/_apis/git/repositories",
    "/fabrikam/Fiber/_apis/git/repositories/r1/items",
    "/fabrikam/Fiber/_apis/git/repositories/r1/pushes",
    "/fabrikam/Fiber/_git/repo/info/refs",
    "/fabrikam/Fiber/_git/repo/git-upload-pack",
    "/fabrikam/_apis/projects",
    "/fabrikam/_apis",
    "/_hosts/vsrm/fabrikam/Fiber/_apis/release/releases",
    "/_hosts/pkgs/fabrikam/_packaging/feed/npm/registry/@scope%2Fname",
]
_WORDS = [
    "fabrikam",
    "Fiber",
    "_apis",
    "git",
    "repositories",
    "r1",
    "pushes",
    "refs",
    "items",
    "%5Fapis",
    "%67it",
    "_git",
    "info",
    "refs",
    "git-receive-pack",
    "git-upload-pack",
    "GIT",
    "projects",
    "build",
    "builds",
    "..",
    "%2e%2e",
    ".",
    "%2F",
    "%5c",
    "%00",
    "%252e",
    "wit",
    "$batch",
    "%24batch",
    "_ws",
    "x.asmx",
    "",
    "_hosts",
    "vsrm",
    "release",
    "a%20b",
    "..;",
    "%c0%ae",
    "~",
    "%7E",
    "@scope%2Fname",
    "_packaging",
]


async def test_what_reaches_upstream_is_what_was_authorized(setup: tuple[Any, Any, str]) -> None:
    """Property: for any target, either nothing reaches upstream (4xx), or upstream sees
    exactly the canonical path, with the authorized method, and that is an operation the
    client is granted."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gateway.canonical import canonicalize

    fake, gw, auth = setup
    catalog = gw.gateway.runtime.catalog
    held = catalog.scopes.closure(["vso.code"])
    loop = asyncio.get_running_loop()
    hosts = tuple(DEFAULT_HOSTS)

    def mutate(segment: str, how: int, pos: int) -> str:
        if not segment:
            return segment
        i = pos % len(segment)
        ch = segment[i]
        if how == 0:  # percent-encode one character
            return segment[:i] + f"%{ord(ch):02x}" + segment[i + 1 :]
        if how == 1:  # flip its case
            return segment[:i] + ch.swapcase() + segment[i + 1 :]
        return segment

    edits = st.lists(
        st.tuples(
            st.integers(0, 9), st.integers(0, 3), st.integers(0, 50), st.sampled_from(_WORDS)
        ),
        max_size=3,
    )

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(
        st.sampled_from(_BASES),
        edits,
        st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"]),
        st.sampled_from(
            ["", "?service=git-receive-pack", "?service=git-upload-pack", "?api-version=7.1"]
        ),
    )
    def prop(base: str, changes: list[tuple[int, int, int, str]], method: str, query: str) -> None:
        words = base.split("/")[1:]
        for at, how, pos, word in changes:
            at %= len(words) + 1
            if how == 2:
                words.insert(at, word)
            elif how == 3 and at < len(words):
                words.pop(at)
            elif at < len(words):
                words[at] = mutate(words[at], how, pos)
        target = "/" + "/".join(words) + query
        before = len(fake.seen)
        status, _ = asyncio.run_coroutine_threadsafe(
            send(gw.url, build(a("p", method, target), auth)), loop
        ).result(30)
        if len(fake.seen) == before:
            assert 400 <= status < 500, (target, status)
            return
        seen = fake.seen[-1]
        t = canonicalize(target, hosts)
        assert status == 200, (target, status)
        assert (seen.method, seen.path, seen.query) == (method, t.path, t.query), target
        m = catalog.match(t.host, method, t.path, t.query)
        assert m is not None, target
        op = m.operation
        assert op.public or any(s in held for s in op.scopes), (target, op.id)

    await loop.run_in_executor(None, prop)
    assert len(fake.seen) > 5  # the property was not vacuous
