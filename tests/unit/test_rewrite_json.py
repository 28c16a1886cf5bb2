"""The JSON body rewriter: faithful or untouched, and the same answer as a plain walk."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.model import Config, GatewayConfig
from gateway.proxy.rewrite import Rewriter
from gateway.proxy.rewrite.json_body import url_key

GW = "https://gw.example.com"
URL = "https://dev.azure.com/fabrikam/_apis/projects/p1"
NEW = f"{GW}/fabrikam/_apis/projects/p1"


def rewriter(**gateway: Any) -> Rewriter:
    gateway.setdefault("listen", {"public_url": GW})
    cfg = GatewayConfig.model_validate(gateway)
    return Rewriter(Config(path=Path("gateway.yaml"), gateway=cfg, clients=(), routes=()))


def rewrite(body: bytes, **kw: Any) -> tuple[bytes, list[str]]:
    skipped: list[str] = []
    return rewriter().rewrite_body(body, on_skip=skipped.append, **kw), skipped


def strict_loads(body: bytes) -> Any:
    """json.loads that refuses what is not JSON (NaN, Infinity)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(body, parse_constant=refuse)


# --- bodies that cannot be rewritten faithfully pass through, counted --------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps(URL).encode(), "top_level_scalar"),  # a bare JSON string
        (b'{"url":"' + URL.encode() + b'","nan":NaN}', "not_json"),
        (b'{"url":"' + URL.encode() + b'","inf":Infinity}', "not_json"),
        (b'{"url":"' + URL.encode() + b'","inf":-Infinity}', "not_json"),
        (b'{"url":"' + URL.encode() + b'","x":"\xff"}', "invalid_utf8"),
        (b'{"url":"' + URL.encode() + b'", ', "not_json"),  # cut short
        (b'{"url":"' + URL.encode() + b'"} trailing', "not_json"),
        (b'{"url":"' + URL.encode() + b'","a":"\\ud800"}', "not_json"),  # lone surrogate
        (b'{"url":"' + URL.encode() + b'","a":' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        (b"<html>" + URL.encode() + b"</html>", "top_level_scalar"),
    ],
)
def test_unfaithful_bodies_pass_through_with_a_reason(body: bytes, reason: str) -> None:
    out, skipped = rewrite(body)
    assert out is body
    assert skipped == [reason]


def test_unreadable_encodings_and_sizes_pass_through_with_a_reason() -> None:
    body = json.dumps({"url": URL, "pad": "a" * 5000}).encode()
    small = rewriter(limits={"rewrite_max_bytes": 1024})
    for kw, reason in [
        ({"content_encoding": "br"}, "unknown_encoding"),
        ({"content_encoding": "gzip"}, "bad_compression"),
    ]:
        skipped: list[str] = []
        assert rewriter().rewrite_body(body, on_skip=skipped.append, **kw) is body
        assert skipped == [reason]
    for candidate in (body, gzip.compress(body)):
        skipped = []
        encoding = "" if candidate is body else "gzip"
        out = small.rewrite_body(candidate, content_encoding=encoding, on_skip=skipped.append)
        assert out is candidate
        assert skipped == ["too_large"]


def test_nothing_to_rewrite_is_not_a_skip() -> None:
    body = b'{"url":"https://example.com/x"}'
    out, skipped = rewrite(body)
    assert out is body and skipped == []


@pytest.mark.parametrize(
    "number",
    [
        b"1e400",
        b"-1e400",
        b"1E+400",
        b"123456789012345678901234567890",
        b"-0.0",
        b"1.10",
        b"5e-324",
    ],
)
def test_numbers_are_kept_as_written(number: bytes) -> None:
    """Numbers are never read and written again: the answer is the same text."""
    body = b'{"value":[{"n":' + number + b',"url":"' + URL.encode() + b'"}],"m":' + number + b"}"
    out, skipped = rewrite(body)
    assert skipped == []
    assert out == body.replace(URL.encode(), NEW.encode())
    strict_loads(out)  # valid JSON


# --- what is rewritten ----------------------------------------------------------------


def test_escapes_spacing_and_duplicate_keys() -> None:
    body = (
        b'{ "url" :\n "https:\\/\\/dev.azure.com\\/fabrikam\\/x" ,'
        b' "description": "see \\"https://dev.azure.com/fabrikam/y\\"",'
        b'"href":"https://dev.azure.com/a","href":"https://dev.azure.com/b",'
        b'"remoteUrl": "https://dev.azure.com/fabrikam/\\u00e9t\\u00e9"}'
    )
    out, _ = rewrite(body)
    text = out.decode()
    assert '"url" :\n "https://gw.example.com/fabrikam/x"' in text
    assert 'see \\"https://dev.azure.com/fabrikam/y\\""' in text  # free text
    assert '"href":"https://gw.example.com/a","href":"https://gw.example.com/b"' in text
    assert json.loads(out)["remoteUrl"] == f"{GW}/fabrikam/été"


def test_browser_links_in_any_shape_are_left_alone() -> None:
    doc = {
        "_links": {
            "self": {"href": "https://dev.azure.com/o/self"},
            "web": {"title": "x", "href": "https://dev.azure.com/o/web"},
            "html": {"href": "https://dev.azure.com/o/html"},
            "badge": {"href": "https://dev.azure.com/o/badge"},
        },
        "webUrl": "https://dev.azure.com/o/w",
    }
    for text in (
        json.dumps(doc),
        json.dumps(doc, indent=2),
        json.dumps(doc, separators=(",", ":")),
    ):
        out = json.loads(rewriter().rewrite_body(text.encode()))
        links = out["_links"]
        assert links["self"]["href"] == f"{GW}/o/self"
        assert links["badge"]["href"] == f"{GW}/o/badge"
        assert links["web"] == doc["_links"]["web"]  # type: ignore[index]
        assert links["html"] == doc["_links"]["html"]  # type: ignore[index]
        assert out["webUrl"] == doc["webUrl"]


def test_arrays_under_url_keys() -> None:
    body = json.dumps(
        {
            "serverUrls": ["https://dev.azure.com/a", 7, "https://dev.azure.com/b"],
            "mirrorUrls": [{"url": "https://dev.azure.com/c"}, "https://dev.azure.com/d"],
            "tags": ["https://dev.azure.com/e"],
            "nested": [["https://dev.azure.com/f"]],
        }
    ).encode()
    out = json.loads(rewriter().rewrite_body(body))
    assert out["serverUrls"] == [f"{GW}/a", 7, f"{GW}/b"]
    # an object in the array ends the strings read as URLs; its own members are read
    assert out["mirrorUrls"] == [{"url": f"{GW}/c"}, "https://dev.azure.com/d"]
    assert out["tags"] == ["https://dev.azure.com/e"]
    assert out["nested"] == [["https://dev.azure.com/f"]]


def test_a_url_shaped_key_is_not_a_value() -> None:
    body = b'{"links":{"https://dev.azure.com/x":1},"url":"https://dev.azure.com/y"}'
    assert json.loads(rewriter().rewrite_body(body)) == {
        "links": {"https://dev.azure.com/x": 1},
        "url": f"{GW}/y",
    }


async def test_the_sliced_rewrite_gives_the_same_bytes() -> None:
    items = [{"url": f"{URL}/{i}", "_links": {"web": {"href": f"{URL}/{i}"}}} for i in range(5000)]
    body = json.dumps({"value": items}).encode()
    rw = rewriter()
    assert len(body) > 256 * 1024
    ticks = 0

    async def count() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())  # noqa: TID251 - a test-local ticker
    try:
        sliced = await rw.rewrite_body_async(body)
    finally:
        counter.cancel()
    assert sliced == rw.rewrite_body(body)
    assert ticks > 10  # the event loop ran other work while the body was rewritten
    assert json.loads(sliced)["value"][4999]["url"] == f"{NEW}/4999"


# --- the same answer as a plain walk over the parsed document ----------------------


def plain(node: Any, public: str, rw: Rewriter) -> Any:
    """The contract, written as a walk over the parsed document."""

    def mapped(value: str) -> str:
        return rw.map_url(value, public) or value

    if isinstance(node, list):
        return [plain(v, public, rw) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.lower() in ("web", "html") and isinstance(value, dict):
            out[key] = value
        elif isinstance(value, str):
            out[key] = mapped(value) if url_key(key) else value
        elif isinstance(value, list) and url_key(key):
            items, strings = [], True
            for v in value:
                strings = strings and not isinstance(v, dict | list)
                items.append(mapped(v) if strings and isinstance(v, str) else plain(v, public, rw))
            out[key] = items
        else:
            out[key] = plain(value, public, rw)
    return out


_KEY = st.sampled_from(
    ["url", "href", "remoteUrl", "webUrl", "web", "html", "_links", "name", "location", "x", "WEB"]
)
_STRING = st.sampled_from(
    [
        "https://dev.azure.com/o/p",
        "https://vsrm.dev.azure.com/o/_apis",
        "HTTPS://Dev.Azure.com/o",
        "https://fabrikam.visualstudio.com/DefaultCollection/p",
        "https://fabrikam@dev.azure.com/o/_git/r",
        "https://example.com/x",
        'https://dev.azure.com/o/"quoted"',
        "https://dev.azure.com/o/\\path",
        "http://dev.azure.com/o",
        "https://dev.azure.com/é",
        "see https://dev.azure.com/o",
        "",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _STRING,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEY, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.dictionaries(_KEY, _JSON, max_size=5) | st.lists(_JSON, max_size=4), st.booleans())
def test_the_rewrite_answers_as_the_plain_walk(doc: Any, pretty: bool) -> None:
    rw = rewriter()
    text = json.dumps(doc, indent=1 if pretty else None, ensure_ascii=pretty)
    out = rw.rewrite_body(text.encode())
    assert json.loads(out) == plain(doc, GW, rw)


def test_skips_are_counted_by_a_bounded_reason() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    body = json.dumps(URL).encode()
    assert rewriter().rewrite_body(body, on_skip=metrics.rewrite_skip) is body
    metrics.rewrite_skip("Not A Reason!")
    text = metrics.render().decode()
    assert 'azdo_gateway_rewrite_skipped_total{reason="top_level_scalar"} 1.0' in text
    assert 'azdo_gateway_rewrite_skipped_total{reason="other"} 1.0' in text
