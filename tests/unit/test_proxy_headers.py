"""Header cleaning: the one place that keeps the client's credentials from upstream."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy import headers
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
    assert len(headers._TO_UPSTREAM.verdicts) <= headers._Direction.MAX_NAMES
    long = "X-" + "a" * 100
    assert list(to_client(CIMultiDict({long: "1", "Set-Cookie": "s"})).items()) == [(long, "1")]
    assert long not in headers._TO_CLIENT.verdicts
