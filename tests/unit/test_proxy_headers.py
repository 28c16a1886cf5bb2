"""Header cleaning: the one place that keeps the client's credentials from upstream."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.headers import to_upstream


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
