from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import (
    Target,
    _canonical_path,
    _plain,
    canonicalize,
    check_headers,
    effective_method,
)
from gateway.catalog import Catalog
from gateway.config.model import DEFAULT_HOSTS
from gateway.errors import BadRequest

HOSTS = tuple(DEFAULT_HOSTS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/fabrikam/_apis/projects", Target("main", "/fabrikam/_apis/projects", "")),
        (
            "/fabrikam/_apis/projects?$top=5&api-version=7.1",
            Target("main", "/fabrikam/_apis/projects", "$top=5&api-version=7.1"),
        ),
        ("/%66abrikam/%5Fapis/%70rojects", Target("main", "/fabrikam/_apis/projects", "")),
        ("/o/p/_apis/git/a%7eb", Target("main", "/o/p/_apis/git/a~b", "")),
        ("/o/Fabrikam%20fiber/_apis", Target("main", "/o/Fabrikam%20fiber/_apis", "")),
        ("/o/caf%c3%a9/_apis", Target("main", "/o/caf%C3%A9/_apis", "")),
        ("/o/p/_apis/wit/workitems/$Task", Target("main", "/o/p/_apis/wit/workitems/$Task", "")),
        ("/_hosts/vsrm/o/_apis/release/releases", Target("vsrm", "/o/_apis/release/releases", "")),
        ("/_HOSTS/VSRM/o/_apis", Target("vsrm", "/o/_apis", "")),
        ("/_hosts/vsrm", Target("vsrm", "/", "")),
        ("/o/_apis/", Target("main", "/o/_apis/", "")),
        ("/", Target("main", "/", "")),
        (
            "/o/p/_packaging/f/npm/registry/@types%2fnode",
            Target("main", "/o/p/_packaging/f/npm/registry/@types%2Fnode", ""),
        ),
        ("/o/p/_apis/a..b/c.d", Target("main", "/o/p/_apis/a..b/c.d", "")),
    ],
)
def test_canonical_forms(raw: str, expected: Target) -> None:
    assert canonicalize(raw, HOSTS) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("http://evil.example/o/_apis", "request target must be a path (origin-form)"),
        ("dev.azure.com:443", "request target must be a path (origin-form)"),
        ("*", "request target must be a path (origin-form)"),
        ("/o/p/_apis/git/repositories%2F..%2F..", "encoded '/' or '\\' in path"),
        ("/o/p/_apis/git/a%2fb", "encoded '/' or '\\' in path"),
        ("/o/p/_apis/git/a%5Cb", "encoded '/' or '\\' in path"),
        ("/o/p/_apis/git/a\\b", "character '\\\\' is not allowed unencoded in a path"),
        ("/o/p/_apis/a%00b", "encoded NUL or control character in path"),
        ("/o/p/_apis/a%0d%0aX-Injected:1", "encoded NUL or control character in path"),
        ("/o/p/_apis/a%zzb", "invalid percent-encoding in path"),
        ("/o/p/_apis/a%2", "invalid percent-encoding in path"),
        ("/o/p/_apis/%", "invalid percent-encoding in path"),
        ("/o/p/_apis/%ff", "percent-encoded bytes are not valid UTF-8"),
        ("/o/p/_apis/%c0%ae%c0%ae/x", "percent-encoded bytes are not valid UTF-8"),
        ("/o/p/../q/_apis", "dot segment in path"),
        ("/o/p/./_apis", "dot segment in path"),
        ("/o/p/%2e%2e/q", "dot segment in path"),
        ("/o/p/.%2E/q", "dot segment in path"),
        ("/o/p/%2e/q", "dot segment in path"),
        ("/o/p/..;/q", "dot segment in path"),
        ("/o/p/.%3b/q", "dot segment in path"),
        ("/o/p/..;jsessionid=1/q", "dot segment in path"),
        ("/o/p/..", "dot segment in path"),
        ("/o/p/%252e%252e/q", "double percent-encoding in path"),
        ("/o/p/a%252Fb", "double percent-encoding in path"),
        ("//o/_apis", "empty path segment ('//')"),
        ("/o//_apis", "empty path segment ('//')"),
        ("/o/p/_apis x", "character ' ' is not allowed unencoded in a path"),
        ("/o/p/_apis\x00", "character '\\x00' is not allowed unencoded in a path"),
        ("/o/p/caf\u00e9", "character 'é' is not allowed unencoded in a path"),
        ("/o/_apis#frag", "request target must not carry a fragment"),
        ("/o/_apis?x=%00", "encoded NUL in query string"),
        ("/o/_apis?x=%zz", "invalid percent-encoding in query string"),
        ("/o/_apis?x=\r\n", "control, space or non-ASCII character in query string"),
        ("/_hosts/vsrm/_hosts/vssps/o", "nested /_hosts/ prefix"),
        ("/o/_packaging/f/npm/registry/@x%2F..", "encoded '/' in path"),
        ("/o/_packaging/f/npm/registry/x%2Fy", "encoded '/' in path"),
        ("/o/_packaging/f/npm/registry/@x%2Fy%2Fz", "encoded '/' in path"),
        ("/o/p/_apis/@types%2Fnode", "encoded '/' or '\\' in path"),
    ],
)
def test_ambiguous_targets_are_rejected(raw: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        canonicalize(raw, HOSTS)
    assert err.value.message == message
    assert err.value.reason == "ambiguous_path"
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("/_hosts/evil/o/_apis", "unknown upstream host 'evil'"),
        ("/_hosts/", "unknown upstream host ''"),
        ("/" + "a/" * 200, "path has more than 128 segments"),
        ("/" + "a" * 9000, "request target longer than 8192 characters"),
    ],
)
def test_bad_requests(raw: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        canonicalize(raw, HOSTS)
    assert (err.value.message, err.value.reason) == (message, "bad_request")


def test_max_length_is_configurable() -> None:
    canonicalize("/" + "a" * 99, HOSTS, max_length=100)
    with pytest.raises(BadRequest):
        canonicalize("/" + "a" * 100, HOSTS, max_length=100)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", [], "GET"),
        ("post", [("Content-Type", "application/json")], "POST"),
        ("POST", [("X-HTTP-Method-Override", "PATCH")], "PATCH"),
        ("POST", [("x-http-method", "delete")], "DELETE"),
        ("POST", [("X-Method-Override", "PUT")], "PUT"),
        ("POST", [("X_HTTP_Method_Override", "PATCH")], "PATCH"),
        ("POST", [("X-HTTP-Method-Override", "PATCH"), ("X-HTTP-Method", "PATCH")], "PATCH"),
    ],
)
def test_effective_method(method: str, headers: list[tuple[str, str]], expected: str) -> None:
    assert effective_method(method, headers) == expected


@pytest.mark.parametrize(
    ("method", "headers", "message"),
    [
        (
            "GET",
            [("X-HTTP-Method-Override", "DELETE")],
            "a method-override header is only accepted on POST, not GET",
        ),
        (
            "PUT",
            [("X-HTTP-Method", "PATCH")],
            "a method-override header is only accepted on POST, not PUT",
        ),
        (
            "POST",
            [("X-HTTP-Method-Override", "GET")],
            "method override to 'GET' is not allowed (allowed: DELETE, PATCH, POST, PUT)",
        ),
        (
            "POST",
            [("X-HTTP-Method-Override", "TRACE")],
            "method override to 'TRACE' is not allowed (allowed: DELETE, PATCH, POST, PUT)",
        ),
        (
            "POST",
            [("X-HTTP-Method-Override", "")],
            "method override to 'nothing' is not allowed (allowed: DELETE, PATCH, POST, PUT)",
        ),
        (
            "POST",
            [("X-HTTP-Method-Override", "PATCH"), ("X-HTTP-Method", "DELETE")],
            "method-override headers name different methods",
        ),
        (
            "POST",
            [("X-HTTP-Method-Override", "PATCH, DELETE")],
            "method-override headers name different methods",
        ),
    ],
)
def test_bad_method_overrides(method: str, headers: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        effective_method(method, headers)
    assert (err.value.message, err.value.reason) == (message, "method_override_not_allowed")


# --- properties ---------------------------------------------------------------

_SEGMENT_ALPHABET = st.sampled_from(
    list("abcXYZ019-._~!$&'()*+,;=:@")
    + [
        "%2e",
        "%2E",
        "%41",
        "%7e",
        "%20",
        "%2F",
        "%5c",
        "%00",
        "%",
        "%c3%a9",
        "%C0%AE",
        "%3b",
        "..",
        "\\",
    ]
)
_TARGETS = st.builds(
    lambda segs, query: "/" + "/".join(segs) + (("?" + query) if query else ""),
    st.lists(st.lists(_SEGMENT_ALPHABET, max_size=5).map("".join), max_size=6),
    st.text(st.sampled_from(list("ab=&%20+?")), max_size=8),
)


def _try(raw: str) -> Target | None:
    try:
        return canonicalize(raw, HOSTS)
    except BadRequest:
        return None


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_TARGETS)
def test_canonicalization_is_idempotent(raw: str) -> None:
    first = _try(raw)
    if first is None:
        return
    again = canonicalize(first.path + (("?" + first.query) if first.query else ""), HOSTS)
    if first.host == "main":
        assert again == first


_PLAIN_PATHS = st.lists(
    st.lists(
        st.sampled_from(list("aZ09-._~!$&'()*+,;=:@") + ["_hosts", "vsrm", ""]), max_size=4
    ).map("".join),
    max_size=6,
).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=600, deadline=None, derandomize=True)
@given(_PLAIN_PATHS)
def test_the_shortcut_only_takes_paths_the_full_walk_leaves_unchanged(path: str) -> None:
    if not _plain(path):
        return
    assert _canonical_path(path, HOSTS) == ("main", path)


@pytest.mark.parametrize(
    "path",
    ["/a//b", "/a/./b", "/a/../b", "/.x", "/a/%41", "/_hosts/vsrm/x", "/_HOSTS", "/a" * 129],
)
def test_the_shortcut_leaves_the_rest_to_the_full_walk(path: str) -> None:
    assert not _plain(path)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_TARGETS)
def test_accepted_paths_have_no_ambiguity_left(raw: str) -> None:
    target = _try(raw)
    if target is None:
        return
    for seg in target.path.split("/")[1:]:
        decoded = unquote(seg)
        assert decoded.partition(";")[0] not in (".", ".."), raw
        assert "\\" not in decoded and "\x00" not in decoded, raw
        if "/" in decoded:  # only npm's @scope%2Fname, under /_packaging/
            assert "_packaging" in target.path.lower() and seg.startswith("@"), raw
    assert "//" not in target.path


_CATALOG = Catalog.builtin()
_WORDS = st.sampled_from(
    [
        "fabrikam",
        "Fiber",
        "_apis",
        "git",
        "repositories",
        "r1",
        "pushes",
        "%5Fapis",
        "%67it",
        "_git",
        "info",
        "refs",
        "GIT",
        "projects",
        "..",
        "%2e%2e",
        "%2F",
        "wit",
        "$batch",
        "%24batch",
        "_ws",
        "x.asmx",
        "",
    ]
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(_WORDS, min_size=1, max_size=7), st.sampled_from(["GET", "POST", "DELETE"]))
def test_what_is_matched_is_what_is_forwarded(words: list[str], method: str) -> None:
    """The operation matched on the canonical path is the one upstream would route to:
    re-canonicalizing and re-matching the forwarded form gives the same operation."""
    target = _try("/" + "/".join(words))
    if target is None:
        return
    first = _CATALOG.match(target.host, method, target.path)
    forwarded = canonicalize(target.path, HOSTS)
    assert forwarded.path == target.path
    second = _CATALOG.match(forwarded.host, method, unquote(forwarded.path).replace("%", "%25"))
    if first is None:
        return
    assert second is not None and second.operation == first.operation


@pytest.mark.parametrize(
    ("headers", "message", "reason"),
    [
        (
            [("X-Original-URL", "/x")],
            "header 'X-Original-URL' is not accepted: it can override the request target",
            "ambiguous_path",
        ),
        (
            [("x-rewrite-url", "/x")],
            "header 'x-rewrite-url' is not accepted: it can override the request target",
            "ambiguous_path",
        ),
        (
            [("X_Original_URL", "/x")],
            "header 'X_Original_URL' is not accepted: it can override the request target",
            "ambiguous_path",
        ),
        ([("Host", "a"), ("host", "b")], "header 'host' is repeated", "bad_request"),
        (
            [("Content-Length", "1"), ("Content-Length", "1")],
            "header 'Content-Length' is repeated",
            "bad_request",
        ),
    ],
)
def test_headers_that_change_the_target_are_rejected(
    headers: list[tuple[str, str]], message: str, reason: str
) -> None:
    with pytest.raises(BadRequest) as err:
        check_headers(headers)
    assert (err.value.message, err.value.reason) == (message, reason)


def test_header_names_seen_are_remembered_within_bounds(monkeypatch) -> None:
    from gateway import canonical
    from gateway.memo import Memo

    fresh = Memo(canonical.header_key, size=canonical.MAX_NORMALIZED)
    monkeypatch.setattr(canonical, "_normalized", fresh)
    check_headers([("X_Original_URL_" * 10, "1"), ("Accept", "*/*")])
    assert canonical._normalized == {"Accept": "accept"}  # 150 characters: not kept
    for i in range(canonical.MAX_NORMALIZED + 50):
        check_headers([(f"X-Custom-{i}", "1")])
    assert len(canonical._normalized) == canonical.MAX_NORMALIZED
    with pytest.raises(BadRequest):
        check_headers([("X_Original_URL", "/other")])  # still normalized when not kept


def test_ordinary_headers_pass() -> None:
    assert not check_headers(
        [("Host", "x"), ("Accept", "a"), ("Accept", "b"), ("Authorization", "Basic x")]
    )


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "x-http-method", "X_Method_Override"])
def test_check_headers_tells_a_method_override_is_present(name: str) -> None:
    # the pipeline works out effective_method only then
    assert check_headers([("Accept", "*/*"), (name, "PATCH")])
