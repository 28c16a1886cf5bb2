"""Package feed pages: PEP 503 HTML and PEP 691 JSON links point at the gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import Config, GatewayConfig
from gateway.proxy.rewrite import Rewriter

GW = "https://gw.example.com"
FEED = "/fabrikam/_packaging/feed1/pypi/simple/demo-pkg/"
HOSTS = {"main": "https://dev.azure.com", "pkgs": "https://pkgs.dev.azure.com"}


def rewriter(**gateway: Any) -> Rewriter:
    gateway.setdefault("listen", {"public_url": GW})
    gateway.setdefault("upstream", {"hosts": HOSTS})
    cfg = GatewayConfig.model_validate(gateway)
    return Rewriter(Config(path=Path("gateway.yaml"), gateway=cfg, clients=(), routes=()))


def page(body: str, **kw: Any) -> str:
    kw.setdefault("content_type", "text/html; charset=utf-8")
    kw.setdefault("host", "pkgs")
    kw.setdefault("path", FEED)
    return rewriter().rewrite_body(body.encode(), **kw).decode()


def test_simple_page_links_of_every_form() -> None:
    body = (
        "<!DOCTYPE html>\n<html><body>\n"
        '<a href="https://pkgs.dev.azure.com/fabrikam/_packaging/feed1/pypi/download/demo-pkg/1.0/'
        'demo_pkg-1.0-py3-none-any.whl#sha256=ab" data-requires-python="&gt;=3.8">whl</a>\n'
        "<a href='/fabrikam/_packaging/feed1/pypi/download/demo-pkg/1.0/demo-pkg-1.0.tar.gz'"
        ' data-dist-info-metadata="sha256=cd">sdist</a>\n'
        '<a href="../../download/demo-pkg/0.9/x.whl?a=1&amp;b=2">rel</a>\n'
        '<a href="https://files.example.com/x.whl">elsewhere</a>\n'
        '<!-- <a href="/fabrikam/in-a-comment"> -->\n'
        "</body></html>\n"
    )
    out = page(body)
    assert (
        f'href="{GW}/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/demo-pkg/1.0/'
        'demo_pkg-1.0-py3-none-any.whl#sha256=ab" data-requires-python="&gt;=3.8"' in out
    )
    assert (
        'href="/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/demo-pkg/1.0/'
        'demo-pkg-1.0.tar.gz" data-dist-info-metadata="sha256=cd"' in out
    )
    assert (
        'href="/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/demo-pkg/0.9/x.whl?a=1&amp;b=2"'
        in out
    )
    assert 'href="https://files.example.com/x.whl"' in out
    assert '<!-- <a href="/fabrikam/in-a-comment"> -->' in out  # comments are not links
    # everything else is the page as it came
    assert out.startswith("<!DOCTYPE html>\n<html><body>\n<a ")
    assert out.endswith(
        '>elsewhere</a>\n<!-- <a href="/fabrikam/in-a-comment"> -->\n</body></html>\n'
    )


def test_base_href_and_relative_links_that_climb_out() -> None:
    body = '<base href="/fabrikam/_packaging/feed1/pypi/"><a href="download/x.whl">x</a>'
    out = page(body)
    assert '<base href="/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/">' in out
    assert '<a href="/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/x.whl">' in out
    climbing = '<a href="../../../../../../../../etc/x">x</a>'
    assert page(climbing) == '<a href="/_hosts/pkgs/etc/x">x</a>'


def test_html_outside_package_feeds_and_bad_pages_pass_through() -> None:
    rw = rewriter()
    body = b'<a href="/fabrikam/x">x</a>'
    assert rw.wants_body({"Content-Type": "text/html"}, "/fabrikam/_apis/x") is False
    assert rw.wants_body({"Content-Type": "text/html"}, FEED) is True
    skipped: list[str] = []
    bad = b'<a href="/fabrikam/x">\xff</a>'
    out = rw.rewrite_body(
        bad, content_type="text/html", host="pkgs", path=FEED, on_skip=skipped.append
    )
    assert out is bad and skipped == ["invalid_utf8"]
    assert rw.rewrite_body(body, content_type="text/html", host="pkgs", path=FEED) != body


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://pkgs.dev.azure.com/fabrikam/_packaging/feed1/pypi/download/p/1/p.whl#sha256=1",
            f"{GW}/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/p/1/p.whl#sha256=1",
        ),
        (
            "/fabrikam/_packaging/feed1/pypi/download/p/1/p.whl",
            "/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/p/1/p.whl",
        ),
        (
            "../../download/p/1/p.whl",
            "/_hosts/pkgs/fabrikam/_packaging/feed1/pypi/download/p/1/p.whl",
        ),
        ("https://files.example.com/p.whl", "https://files.example.com/p.whl"),
    ],
)
def test_pep_691_json_file_urls(url: str, expected: str) -> None:
    doc = {
        "meta": {"api-version": "1.1"},
        "name": "p",
        "files": [{"filename": "p.whl", "url": url, "hashes": {"sha256": "1"}, "size": 10}],
        "versions": ["1"],
    }
    out = rewriter().rewrite_body(
        json.dumps(doc).encode(),
        content_type="application/vnd.pypi.simple.v1+json",
        host="pkgs",
        path=FEED,
    )
    got = json.loads(out)
    assert got["files"][0]["url"] == expected
    assert got["files"][0]["size"] == 10 and got["meta"] == doc["meta"]
