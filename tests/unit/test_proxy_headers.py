"""Header cleaning: the one place that keeps the client's credentials from upstream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy import headers as hdrs
from gateway.proxy.headers import to_client, to_upstream


def test_client_credentials_never_go_upstream_in_any_spelling() -> None:
    sent = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Authorization", "Basic OmF6Z3dfa2V5"),
                ("authorization", "Bearer second"),
                ("Proxy-Authorization", "Basic cHJveHk="),
                ("Proxy_Authorization", "Basic dW5kZXJzY29yZQ=="),
                ("Cookie", "session=1"),
                ("COOKIE", "session=2"),
                ("Accept", "application/json"),
            ]
        )
    )
    assert list(to_upstream(sent).items()) == [("Accept", "application/json")]


def test_framing_headers_spelled_with_underscores_never_cross() -> None:
    """`Content_Length` beside `Transfer-Encoding: chunked` is a CL.TE pair for a
    server that reads `_` as `-`: it is dropped, both ways."""
    sent = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content_Length", "4"),
                ("content_length", "5"),
                ("Transfer_Encoding", "chunked"),
                ("TRANSFER_encoding", "identity"),
                ("Content-Length", "12"),
                ("Content_Type", "application/json"),
            ]
        )
    )
    assert list(to_upstream(sent).items()) == [
        ("Content-Length", "12"),
        ("Content_Type", "application/json"),
    ]
    assert list(to_client(sent).items()) == list(to_upstream(sent).items())
    assert list(to_client(sent, body_rewritten=True).items()) == [
        ("Content_Type", "application/json")
    ]


def test_names_listed_in_connection_are_dropped_though_remembered_as_kept() -> None:
    plain = CIMultiDictProxy(CIMultiDict([("X-Trace", "1"), ("Accept", "*/*")]))
    assert list(to_upstream(plain).items()) == [("X-Trace", "1"), ("Accept", "*/*")]
    listed = CIMultiDictProxy(
        CIMultiDict(
            [("Connection", "keep-alive, x_trace"), ("X-Trace", "1"), ("Keep-Alive", "5")]
            + [("Accept", "*/*"), ("Proxy-Connection", "Accept")]
        )
    )
    assert list(to_upstream(listed).items()) == []
    assert list(to_client(listed).items()) == []
    assert list(to_upstream(plain).items()) == [("X-Trace", "1"), ("Accept", "*/*")]


def test_the_names_remembered_are_bounded() -> None:
    hostile = [(f"X-{i}", "v") for i in range(5000)] + [("Cookie", "c"), ("Te", "trailers")]
    for _ in range(2):
        sent = CIMultiDictProxy(CIMultiDict(hostile))
        assert list(to_upstream(sent).items()) == hostile[:-2]
    assert len(hdrs._TO_UPSTREAM) <= hdrs.MAX_NAMES
    long = "X-" + "a" * 100
    assert list(to_client(CIMultiDict({long: "1", "Set-Cookie": "s"})).items()) == [(long, "1")]
    assert long not in hdrs._TO_CLIENT


def _plain(headers: CIMultiDictProxy[str], banned: frozenset[str]) -> list[tuple[str, str]]:
    """The cleaning as the rule reads, judging every name afresh (what the remembered
    verdicts must agree with)."""
    banned |= hdrs.connection_options(headers)
    kept = []
    for name, value in headers.items():
        key = name.lower().replace("_", "-")
        if "_" in name and key in hdrs.FRAMING:
            continue
        if key not in banned and not key.startswith("proxy-"):
            kept.append((name, value))
    return kept


NAMES = ["Accept", "Authorization", "Connection", "Keep-Alive", "Proxy-Connection", "TE"]
NAMES += ["Content-Length", "Content_Length", "Transfer_Encoding", "X-Trace", "X_Trace"]
NAMES += ["Cookie", "Set-Cookie", "Host", "X-Request-ID", "X-HTTP-Method-Override", "Upgrade"]
_name = st.sampled_from(NAMES).flatmap(
    lambda n: st.sampled_from([n, n.lower(), n.upper(), n.swapcase()])
) | st.from_regex(r"\A[A-Za-z_-]{1,12}\Z")
_value = st.sampled_from(["1", "close", "keep-alive", "x-trace, Accept", " X_TRACE ,, te"])


@given(st.lists(st.tuples(_name, _value), max_size=12))
def test_remembered_verdicts_agree_with_the_rule(items: list[tuple[str, str]]) -> None:
    sent = CIMultiDictProxy(CIMultiDict(items))
    upstream = hdrs.HOP_BY_HOP | hdrs.CLIENT_ONLY
    upstream |= hdrs.METHOD_OVERRIDE | hdrs.GATEWAY_SET
    client = hdrs.HOP_BY_HOP | hdrs.UPSTREAM_ONLY
    for _ in range(2):  # judged afresh, then remembered
        assert list(to_upstream(sent).items()) == _plain(sent, upstream)
        assert list(to_client(sent).items()) == _plain(sent, client)
        assert list(to_client(sent, body_rewritten=True).items()) == _plain(
            sent, client | {"content-length"}
        )
