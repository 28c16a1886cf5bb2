"""Route classes of request bodies and their effective limits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.catalog import Catalog
from gateway.config.load import load
from gateway.config.model import BodyLimits, Limits
from gateway.proxy.bodylimits import body_class, describe, effective_limits, operation_class

MIB = 1 << 20


@pytest.mark.parametrize(
    ("host", "method", "path", "query", "expected"),
    [
        ("main", "POST", "/fabrikam/Fiber/_git/fiber/git-receive-pack", "", "git"),
        ("main", "POST", "/fabrikam/_git/fiber/git-upload-pack", "", "git"),
        ("main", "GET", "/fabrikam/Fiber/_git/fiber/info/refs", "service=git-receive-pack", "git"),
        ("main", "PUT", "/fabrikam/Fiber/_git/fiber/info/lfs/objects/" + "a" * 64, "", "git"),
        ("pkgs", "PUT", "/fabrikam/_packaging/feed/nuget/v2/", "", "packages"),
        ("pkgs", "POST", "/fabrikam/Fiber/_packaging/feed/pypi/upload/", "", "packages"),
        ("main", "POST", "/fabrikam/Fiber/_apis/git/repositories/fiber/pushes", "", "rest"),
        ("main", "POST", "/fabrikam/Fiber/_apis/wit/attachments", "", "rest"),
        ("feeds", "PATCH", "/fabrikam/_apis/packaging/globalpermissions", "", "rest"),
    ],
)
def test_class_of_a_matched_request(
    host: str, method: str, path: str, query: str, expected: str
) -> None:
    match = Catalog.builtin().match(host, method, path, query)
    assert match is not None
    assert body_class(match) == expected


def test_a_request_without_operation_is_unmatched() -> None:
    assert body_class(None) == "unmatched"


def test_git_and_packaging_entries_of_the_catalog_get_their_classes() -> None:
    ops = list(Catalog.builtin())
    classes = {op.id: operation_class(op) for op in ops}
    git = {i for i, c in classes.items() if c == "git"}
    packages = {op for op in ops if classes[op.id] == "packages"}
    assert git == {i for i in classes if i.startswith(("git.SmartHttp_", "git.Lfs_"))}
    assert {i for i in classes if i.startswith("packaging.")} <= {op.id for op in packages}
    assert all(op.host == "pkgs" and "/_packaging/" in op.template for op in packages)


@pytest.mark.parametrize(
    ("ceiling", "body_bytes", "expected"),
    [
        (None, {}, {"rest": 32 * MIB, "git": None, "packages": None, "unmatched": 32 * MIB}),
        (1000, {}, {"rest": 1000, "git": 1000, "packages": 1000, "unmatched": 1000}),
        (
            None,
            {"rest": 5, "git": 7, "unmatched": None},
            {"rest": 5, "git": 7, "packages": None, "unmatched": None},
        ),
        (
            100,
            {"rest": 5, "git": None, "packages": 200},
            {"rest": 5, "git": 100, "packages": 100, "unmatched": 100},
        ),
        (None, {"rest": 0}, {"rest": 0, "git": None, "packages": None, "unmatched": 32 * MIB}),
    ],
)
def test_max_body_bytes_caps_every_class(
    ceiling: int | None, body_bytes: dict[str, int | None], expected: dict[str, int | None]
) -> None:
    limits = Limits(max_body_bytes=ceiling, body_bytes=BodyLimits(**body_bytes))
    assert dict(effective_limits(limits)) == expected


def test_describe_for_check() -> None:
    limits = Limits(body_bytes=BodyLimits(git=2 << 30, packages=3072, unmatched=1000))
    assert describe(limits) == "rest 32 MiB, git 2 GiB, packages 3 KiB, unmatched 1000 bytes"
    assert describe(Limits()) == "rest 32 MiB, git no limit, packages no limit, unmatched 32 MiB"


def test_classes_set_above_the_ceiling_are_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gateway.yaml").write_text(
        textwrap.dedent("""\
        limits:
          max_body_bytes: 1000
          body_bytes:
            rest: 500
            git: null
            packages: 2000
        """)
    )
    config = load(tmp_path / "gateway.yaml", env={})
    assert [str(w) for w in config.warnings if "limits" in str(w)] == [
        "gateway.yaml:5: limits.body_bytes.git: no limit here, "
        "but max_body_bytes (1000) caps every class",
        "gateway.yaml:6: limits.body_bytes.packages: 2000 bytes here, "
        "but max_body_bytes (1000) caps every class",
    ]
