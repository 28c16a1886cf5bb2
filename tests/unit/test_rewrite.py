from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.config.model import Config, GatewayConfig
from gateway.proxy.rewrite import Rewriter, _has_needle
from gateway.proxy.rewrite.kinds import KINDS

GW = "https://gw.example.com"


def rewriter(**gateway: Any) -> Rewriter:
    gateway.setdefault("listen", {"public_url": GW})
    cfg = GatewayConfig.model_validate(gateway)
    return Rewriter(Config(path=Path("gateway.yaml"), gateway=cfg, clients=(), routes=()))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://dev.azure.com/fabrikam/_apis/projects", f"{GW}/fabrikam/_apis/projects"),
        ("https://DEV.AZURE.COM:443/fabrikam/_apis?x=1#f", f"{GW}/fabrikam/_apis?x=1#f"),
        ("https://dev.azure.com", GW),
        (
            "https://vsrm.dev.azure.com/fabrikam/_apis/release/releases",
            f"{GW}/_hosts/vsrm/fabrikam/_apis/release/releases",
        ),
        (
            "https://vssps.dev.azure.com/fabrikam/_apis/graph/users",
            f"{GW}/_hosts/vssps/fabrikam/_apis/graph/users",
        ),
        (
            "https://app.vssps.visualstudio.com/_apis/profile/profiles/me",
            f"{GW}/_hosts/app/_apis/profile/profiles/me",
        ),
        (
            "https://fabrikam@dev.azure.com/fabrikam/Fiber/_git/app",
            "https://fabrikam@gw.example.com/fabrikam/Fiber/_git/app",
        ),
        # legacy forms
        ("https://fabrikam.visualstudio.com/_apis/projects", f"{GW}/fabrikam/_apis/projects"),
        (
            "https://fabrikam.visualstudio.com/DefaultCollection/Fiber/_apis/git/repositories",
            f"{GW}/fabrikam/Fiber/_apis/git/repositories",
        ),
        (
            "https://fabrikam.vsrm.visualstudio.com/_apis/Release/releases/1",
            f"{GW}/_hosts/vsrm/fabrikam/_apis/Release/releases/1",
        ),
        (
            "https://fabrikam.feeds.visualstudio.com/_apis/packaging/feeds",
            f"{GW}/_hosts/feeds/fabrikam/_apis/packaging/feeds",
        ),
        # not Azure DevOps, or not configured: unchanged
        ("https://example.com/fabrikam", None),
        ("http://dev.azure.com/fabrikam", None),
        ("https://dev.azure.com.evil.example/fabrikam", None),
        ("https://spsprodweu5.vssps.visualstudio.com/_apis/x", None),
        ("https://fabrikam.blob.core.windows.net/x?sig=abc", None),
        ("https://dev.azure.com:notaport/x", None),
        ("ftp://dev.azure.com/x", None),
        ("/fabrikam/_apis", None),
    ],
)
def test_map_url(url: str, expected: str | None) -> None:
    assert rewriter().map_url(url) == expected


def test_legacy_forms_need_the_real_services_hosts() -> None:
    rw = rewriter(upstream={"hosts": {"main": "https://tfs.corp.example/tfs"}})
    assert rw.map_url("https://fabrikam.visualstudio.com/_apis") is None
    assert rw.map_url("https://tfs.corp.example/tfs/DefaultCollection/_apis") == (
        f"{GW}/DefaultCollection/_apis"
    )
    assert rw.map_url("https://tfs.corp.example/tfsx/_apis") is None
    assert rw.map_url("https://tfs.corp.example/other") is None


def test_hosts_sharing_an_origin_resolve_by_longest_path() -> None:
    rw = rewriter(
        upstream={"hosts": {"main": "http://127.0.0.1:9000", "vsrm": "http://127.0.0.1:9000/vsrm"}}
    )
    assert rw.map_url("http://127.0.0.1:9000/vsrm/o/_apis") == f"{GW}/_hosts/vsrm/o/_apis"
    assert rw.map_url("http://127.0.0.1:9000/vsrmx/_apis") == f"{GW}/vsrmx/_apis"


def test_public_url_with_a_path() -> None:
    rw = rewriter(listen={"public_url": "https://corp.example/ado/"})
    assert (
        rw.map_url("https://vsrm.dev.azure.com/o/x") == "https://corp.example/ado/_hosts/vsrm/o/x"
    )
    h = rw.rewrite_headers({"Location": "/o/_apis/x"}, host="vsrm")
    assert h["Location"] == "/ado/_hosts/vsrm/o/_apis/x"


def test_public_url_defaults_to_the_listener_not_the_host_header() -> None:
    rw = rewriter(
        listen={"host": "0.0.0.0", "port": 8443, "tls": {"cert_file": "c.pem", "key_file": "k.pem"}}
    )
    assert rw.public_url_for() == "https://127.0.0.1:8443"
    assert rw.map_url("https://dev.azure.com/o") == "https://127.0.0.1:8443/o"


@pytest.mark.parametrize(
    ("headers", "host", "expected"),
    [
        ({"Location": "https://dev.azure.com/o/_apis/x"}, "main", f"{GW}/o/_apis/x"),
        ({"location": "https://vsrm.dev.azure.com/o/x"}, "main", f"{GW}/_hosts/vsrm/o/x"),
        ({"Location": "/o/_apis/x"}, "main", "/o/_apis/x"),
        ({"Location": "/o/_apis/x"}, "vsrm", "/_hosts/vsrm/o/_apis/x"),
        ({"Location": "//vsrm.dev.azure.com/o/x"}, "main", f"{GW}/_hosts/vsrm/o/x"),
        ({"Location": "x/y"}, "vsrm", "x/y"),
        # a redirect off Azure DevOps (blob storage, sign-in) passes through unrewritten
        (
            {"Location": "https://store.blob.core.windows.net/c/x?sv=1&sig=s"},
            "main",
            "https://store.blob.core.windows.net/c/x?sv=1&sig=s",
        ),
        (
            {"Location": "https://login.microsoftonline.com/common"},
            "main",
            "https://login.microsoftonline.com/common",
        ),
    ],
)
def test_rewrite_location(headers: dict[str, str], host: str, expected: str) -> None:
    out = rewriter().rewrite_headers(headers, host=host)
    assert list(out.values()) == [expected]


def test_rewrite_headers_keeps_everything_else_and_duplicates() -> None:
    h: CIMultiDict[str] = CIMultiDict()
    h.add("Content-Location", "https://dev.azure.com/o/_apis/x")
    h.add("X-MS-ContinuationToken", "https://dev.azure.com/not-a-header-we-touch")
    h.add("Set-Cookie", "a=1")
    h.add("Set-Cookie", "b=2")
    out = rewriter().rewrite_headers(h)
    assert out["Content-Location"] == f"{GW}/o/_apis/x"
    assert out["X-MS-ContinuationToken"] == "https://dev.azure.com/not-a-header-we-touch"
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("headers", "wanted"),
    [
        ({"Content-Type": "application/json; charset=utf-8; api-version=7.1"}, True),
        ({"Content-Type": "application/json", "Content-Length": "20"}, True),
        ({"Content-Type": "application/vnd.oci.image.index.v1+json"}, True),
        ({"Content-Type": "text/json"}, True),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, True),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, False),
        ({"Content-Type": "application/json", "Content-Length": "0"}, False),
        ({"Content-Type": "application/json", "Content-Length": "1025"}, False),
        ({"Content-Type": "application/json", "Content-Length": "x"}, False),
        ({"Content-Type": "application/x-git-upload-pack-result"}, False),
        ({"Content-Type": "application/jsonx"}, False),
        ({"Content-Type": "text/html"}, False),
        ({}, False),
    ],
)
def test_wants_body(headers: dict[str, str], wanted: bool) -> None:
    assert rewriter(limits={"rewrite_max_bytes": 1024}).wants_body(headers) is wanted


REPO = {
    "id": "r1",
    "name": "app",
    "url": "https://dev.azure.com/fabrikam/p1/_apis/git/repositories/r1",
    "remoteUrl": "https://fabrikam@dev.azure.com/fabrikam/p1/_git/app",
    "sshUrl": "git@ssh.dev.azure.com:v3/fabrikam/p1/app",
    "webUrl": "https://dev.azure.com/fabrikam/p1/_git/app",
    "project": {"id": "p1", "url": "https://dev.azure.com/fabrikam/_apis/projects/p1"},
    "description": "mirror of https://dev.azure.com/fabrikam/p1/_git/old",
    "_links": {
        "self": {"href": "https://dev.azure.com/fabrikam/p1/_apis/git/repositories/r1"},
        "web": {"href": "https://dev.azure.com/fabrikam/p1/_git/app"},
        "release": {"href": "https://fabrikam.vsrm.visualstudio.com/_apis/release/releases/3"},
        "blob": {"href": "https://store.blob.core.windows.net/x"},
    },
    "size": 12345678901234567890,
    "ratio": 0.25,
    "unicode": "Fiber ✓",
}


def test_rewrite_json_body() -> None:
    out = json.loads(rewriter().rewrite_body(json.dumps({"count": 1, "value": [REPO]}).encode()))
    repo = out["value"][0]
    assert repo["url"] == f"{GW}/fabrikam/p1/_apis/git/repositories/r1"
    assert repo["remoteUrl"] == "https://fabrikam@gw.example.com/fabrikam/p1/_git/app"
    assert repo["project"]["url"] == f"{GW}/fabrikam/_apis/projects/p1"
    assert repo["_links"]["self"]["href"] == f"{GW}/fabrikam/p1/_apis/git/repositories/r1"
    assert (
        repo["_links"]["release"]["href"] == f"{GW}/_hosts/vsrm/fabrikam/_apis/release/releases/3"
    )
    # browsers, free text, other hosts and ssh stay as they were
    for key in ("webUrl", "sshUrl", "description", "size", "ratio", "unicode"):
        assert repo[key] == REPO[key]
    assert repo["_links"]["web"] == REPO["_links"]["web"]
    assert repo["_links"]["blob"] == REPO["_links"]["blob"]


def test_rewrite_resource_areas_and_location_service() -> None:
    areas = {
        "count": 2,
        "value": [
            {
                "id": "efc2f575-36ef-48e9-b672-0c6fb4a48ac5",
                "name": "Release",
                "locationUrl": "https://vsrm.dev.azure.com/fabrikam/",
            },
            {
                "id": "79134c72-4a58-4b42-976c-04e7115f32bf",
                "name": "core",
                "locationUrl": "https://dev.azure.com/fabrikam/",
            },
        ],
    }
    out = json.loads(rewriter().rewrite_body(json.dumps(areas).encode()))
    assert [a["locationUrl"] for a in out["value"]] == [
        f"{GW}/_hosts/vsrm/fabrikam/",
        f"{GW}/fabrikam/",
    ]
    conn = {
        "locationServiceData": {
            "accessMappings": [
                {"moniker": "PublicAccessMapping", "accessPoint": "https://dev.azure.com/fabrikam/"}
            ],
            "serviceDefinitions": [
                {
                    "serviceType": "LocationService2",
                    "relativePath": "/",
                    "locationMappings": [
                        {
                            "accessMappingMoniker": "PublicAccessMapping",
                            "location": "https://vssps.dev.azure.com/fabrikam/",
                        }
                    ],
                }
            ],
        }
    }
    out = json.loads(rewriter().rewrite_body(json.dumps(conn).encode()))
    lsd = out["locationServiceData"]
    assert lsd["accessMappings"][0]["accessPoint"] == f"{GW}/fabrikam/"
    assert lsd["serviceDefinitions"][0]["locationMappings"][0]["location"] == (
        f"{GW}/_hosts/vssps/fabrikam/"
    )
    assert lsd["serviceDefinitions"][0]["relativePath"] == "/"


@pytest.mark.parametrize(
    "body",
    [
        b'{"url": "https://example.com/x"}',  # nothing to rewrite
        b'{"url": "https://dev.azure.com/x", ',  # not JSON after all
        b"\xff\xfe{\x00}\x00",  # not UTF-8
        b"",
        b"dev.azure.com" * 3,
    ],
)
def test_bodies_left_alone_are_the_same_bytes(body: bytes) -> None:
    assert rewriter().rewrite_body(body) is body


def test_rewrite_keeps_the_content_encoding() -> None:
    body = json.dumps({"url": "https://dev.azure.com/o/x"}).encode()
    rw = rewriter()
    out = rw.rewrite_body(gzip.compress(body), content_encoding="gzip")
    assert json.loads(gzip.decompress(out)) == {"url": f"{GW}/o/x"}
    out = rw.rewrite_body(zlib.compress(body), content_encoding="deflate")
    assert json.loads(zlib.decompress(out)) == {"url": f"{GW}/o/x"}
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    assert json.loads(
        zlib.decompress(rw.rewrite_body(raw_deflate, content_encoding="deflate"))
    ) == {"url": f"{GW}/o/x"}
    assert rw.rewrite_body(body, content_encoding="br") is body
    assert rw.rewrite_body(b"not gzip", content_encoding="gzip") == b"not gzip"


def test_compressed_bodies_that_inflate_past_the_limit_pass_untouched() -> None:
    body = json.dumps({"url": "https://dev.azure.com/o/x", "pad": "a" * 5000}).encode()
    bomb = gzip.compress(body)
    assert len(bomb) < 1024
    assert (
        rewriter(limits={"rewrite_max_bytes": 1024}).rewrite_body(bomb, content_encoding="gzip")
        is bomb
    )
    assert rewriter(limits={"rewrite_max_bytes": 1024}).rewrite_body(body) is body
    truncated = gzip.compress(body)[:-12]
    assert rewriter().rewrite_body(truncated, content_encoding="gzip") is truncated


def test_deeply_nested_json_does_not_crash() -> None:
    body = b'{"url":"https://dev.azure.com/x","a":' + b"[" * 100000 + b"]" * 100000 + b"}"
    assert rewriter().rewrite_body(body) is body


@pytest.mark.parametrize("depth", [200, 950, 990, 2000])
def test_nesting_near_the_recursion_limit(depth: int) -> None:
    body = b'{"url":"https://dev.azure.com/x","a":' + b'{"b":' * depth + b"1" + b"}" * depth + b"}"
    out = rewriter().rewrite_body(body)
    assert out is body or json.loads(out)["url"] == f"{GW}/x"


def test_package_feed_urls_are_rewritten() -> None:
    feed = "https://pkgs.dev.azure.com/fabrikam/_packaging/f1"
    index = {
        "version": "3.0.0",
        "resources": [
            {"@id": f"{feed}/nuget/v3/query2/", "@type": "SearchQueryService"},
            {"@id": f"{feed}/nuget/v3/flat2/", "@type": "PackageBaseAddress/3.0.0"},
        ],
    }
    out = json.loads(rewriter().rewrite_body(json.dumps(index).encode()))
    assert [r["@id"] for r in out["resources"]] == [
        f"{GW}/_hosts/pkgs/fabrikam/_packaging/f1/nuget/v3/query2/",
        f"{GW}/_hosts/pkgs/fabrikam/_packaging/f1/nuget/v3/flat2/",
    ]
    assert out["resources"][0]["@type"] == "SearchQueryService"
    npm = {
        "name": "left-pad",
        "versions": {
            "1.0.0": {
                "dist": {
                    "tarball": f"{feed}/npm/registry/left-pad/-/left-pad-1.0.0.tgz",
                    "shasum": "ab",
                }
            }
        },
    }
    out = json.loads(rewriter().rewrite_body(json.dumps(npm).encode()))
    assert out["versions"]["1.0.0"]["dist"]["tarball"] == (
        f"{GW}/_hosts/pkgs/fabrikam/_packaging/f1/npm/registry/left-pad/-/left-pad-1.0.0.tgz"
    )


@pytest.mark.parametrize(
    "extra",
    [
        b'"big":123456789012345678901234567890',  # past 64 bits
        b'"f":1e+16,"g":0.1,"s":"\\u00e9\\ud83d\\ude00"',
    ],
)
def test_values_survive_a_rewrite(extra: bytes) -> None:
    body = b'{"url":"https://dev.azure.com/fabrikam/_apis/x",' + extra + b"}"
    out = rewriter().rewrite_body(body)
    assert out is not body
    got, sent = json.loads(out), json.loads(body)
    assert got.pop("url") == f"{GW}/fabrikam/_apis/x"
    sent.pop("url")
    assert json.dumps(got) == json.dumps(sent)  # NaN != NaN: compare as text


def test_nesting_orjson_cannot_write_is_written_by_the_json_module() -> None:
    body = b'{"url":"https://dev.azure.com/x","a":' + b"[" * 300 + b"]" * 300 + b"}"
    out = rewriter().rewrite_body(body)
    assert json.loads(out)["url"] == f"{GW}/x"


_PIECES = st.sampled_from(
    [
        "https://dev.azure.com",
        "https://vsrm.dev.azure.com",
        "HTTPS://Dev.Azure.com",
        "https://dev.azure.com:443",
        "http://dev.azure.com",
        "https://fabrikam@dev.azure.com",
        "https://dev.azure.com.evil.example",
        "https://fabrikam.visualstudio.com",
        "https://fabrikam.vsrm.visualstudio.com",
        "https://tfs.contoso.com:8443",
        "https://[::1]:8443",
        "ftp://dev.azure.com",
        "dev.azure.com",
        "",
    ]
)
_REST = st.lists(
    st.sampled_from(
        [
            "/",
            "fabrikam",
            "tfs",
            "DefaultCollection",
            "_apis",
            "?",
            "#",
            "x=1",
            ":",
            "@",
            "%2F",
            "é",
        ]
    ),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(_PIECES, _REST)
def test_map_url_fast_path_answers_as_the_full_parse(origin: str, rest: str) -> None:
    r = rewriter(
        upstream={
            "hosts": {
                "main": "https://dev.azure.com",
                "vsrm": "https://vsrm.dev.azure.com",
                "tfs": "https://tfs.contoso.com:8443/tfs",
                "lo": "https://[::1]:8443",
            }
        }
    )
    url = origin + rest
    assert r.urls.map_url(url, GW) == r.urls._map_parsed(url, GW)


NEEDLES = (b"dev.azure.com", b"visualstudio.com")


@given(
    st.lists(st.sampled_from([b"Dev.Azure.com", b"dev.azure.co", b"VISUALSTUDIO.COM", b"x"])).map(
        b"".join
    )
    | st.binary()
)
def test_the_needle_search_is_case_blind(raw: bytes) -> None:
    assert _has_needle(raw, NEEDLES) is any(n in raw.lower() for n in NEEDLES)


@given(
    st.sampled_from(
        ["application/json", "text/html", "application/vnd.git-lfs+json", "image/png"]
        + ["application/vnd.pypi.simple.v1+json", " Application/JSON; charset=utf-8", ""]
    ),
    st.sampled_from(
        [None, "/", "/o/_packaging/f/pypi/simple/", "/o/p/_git/r/info/lfs/objects/batch"]
    ),
)
def test_the_remembered_kinds_of_a_content_type_agree_with_the_rule(
    content_type: str, path: str | None
) -> None:
    plain = next(
        (
            kind
            for kind in KINDS
            if kind.types.match(content_type)
            and (kind.paths is None or (path is not None and kind.paths.search(path)))
        ),
        None,
    )
    rw = rewriter()
    assert rw.kind_of(content_type, path) is plain
    assert rw.kind_of(content_type, path) is plain  # remembered
