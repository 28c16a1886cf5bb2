"""Header cleaning: the one place that keeps the client's credentials from upstream."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

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
