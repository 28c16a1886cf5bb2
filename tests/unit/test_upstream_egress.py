"""Which egress proxy a request to a URL goes through (`upstream.proxy`, `trust_env`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config.model import Upstream

PROXY = "http://egress-user:egress-s3cret@127.0.0.1:3128"


def test_no_proxy_by_default_even_with_the_environment_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert Upstream().proxy_for("https://dev.azure.com") is None


def test_configured_proxy_for_every_url_and_never_shown() -> None:
    upstream = Upstream(proxy=PROXY)
    assert upstream.proxy_for("https://dev.azure.com") == PROXY
    assert upstream.proxy_for("http://tfs.contoso.com:8080") == PROXY
    assert "s3cret" not in repr(upstream) and "s3cret" not in str(upstream.model_dump())


@pytest.mark.parametrize(
    "env, url, expected",
    [
        ({"HTTPS_PROXY": "http://p:1"}, "https://dev.azure.com", "http://p:1"),
        ({"https_proxy": "http://p:1"}, "https://dev.azure.com", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1"}, "http://tfs.contoso.com", None),
        ({"HTTP_PROXY": "http://p:2"}, "http://tfs.contoso.com", "http://p:2"),
        ({"ALL_PROXY": "http://p:3"}, "https://dev.azure.com", "http://p:3"),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".azure.com"},
            "https://vssps.dev.azure.com",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"},
            "https://127.0.0.1:8443/x",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "login.microsoftonline.com"},
            "https://dev.azure.com",
            "http://p:1",
        ),
    ],
)
def test_trust_env_takes_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Upstream(trust_env=True).proxy_for(url) == expected


def test_proxy_and_trust_env_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="set either proxy or trust_env, not both") as err:
        Upstream(proxy=PROXY, trust_env=True)
    assert "s3cret" not in str(err.value.errors(include_input=False))


@pytest.mark.parametrize(
    "url",
    ["socks5://u:s3cret@h:1080", "proxy.example.com:3128", "http://u:s3cret@h:x/", "http://h/p"],
)
def test_bad_proxy_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        Upstream(proxy=url)
    [problem] = err.value.errors(include_input=False)
    assert problem["msg"] == (
        "Value error, expected an http(s) proxy URL such as "
        "http://proxy.example.com:3128 (user:password@ allowed)"
    )
