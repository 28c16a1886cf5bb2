"""gateway.projects: the id <-> name cache, its bound and TTL, single flight, untrusted answers."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.projects import ProjectNames, lookup_path, parse_project
from gateway.types import ProjectRef

FIBER_ID = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"
OPS_ID = "0b5a2f7e-9d1c-4e3f-8a6b-2c4d6e8f0a1b"
NAMES = {FIBER_ID: "Fabrikam-Fiber", OPS_ID: "Contoso-Ops"}


class Upstream:
    """A lookup that answers from NAMES and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, organization: str, project: str) -> tuple[str, str] | None:
        self.calls.append((organization, project))
        if project.lower() in NAMES:
            return project.lower(), NAMES[project.lower()]
        for pid, name in NAMES.items():
            if name.lower() == project.lower():
                return pid, name
        return None


async def test_an_id_gets_its_name_and_both_directions_are_cached() -> None:
    names, upstream = ProjectNames(), Upstream()
    ref = await names.resolve("fabrikam", FIBER_ID.upper(), upstream, credential="c")
    assert ref == ProjectRef(FIBER_ID, "Fabrikam-Fiber")
    assert await names.resolve("FABRIKAM", FIBER_ID, upstream, credential="c") == ref
    assert await names.resolve("fabrikam", "fabrikam-FIBER", upstream, credential="c") == (
        ProjectRef(FIBER_ID, "fabrikam-FIBER")
    )
    assert upstream.calls == [("fabrikam", FIBER_ID.upper())]
    # per organization: the same id elsewhere is another lookup
    await names.resolve("contoso", FIBER_ID, upstream, credential="c")
    assert len(upstream.calls) == 2


async def test_an_unknown_id_is_not_cached_and_has_no_name() -> None:
    names, upstream = ProjectNames(), Upstream()
    unknown = "11111111-2222-3333-4444-555555555555"
    for _ in range(2):
        assert await names.resolve("fabrikam", unknown, upstream, credential="c") == ProjectRef(
            unknown, None
        )
    assert len(upstream.calls) == 2
    assert await names.resolve("fabrikam", "Nope", upstream, credential="c") == ProjectRef(
        None, None
    )


async def test_a_failing_lookup_is_an_unresolved_project() -> None:
    async def broken(organization: str, project: str) -> tuple[str, str] | None:
        raise RuntimeError("boom")

    names = ProjectNames()
    assert await names.resolve("fabrikam", FIBER_ID, broken, credential="c") == ProjectRef(
        FIBER_ID, None
    )
    assert len(names) == 0


async def test_entries_expire_after_the_ttl() -> None:
    now = [1000.0]
    names, upstream = ProjectNames(ttl_s=60, timer=lambda: now[0]), Upstream()
    await names.resolve("fabrikam", FIBER_ID, upstream, credential="c")
    now[0] += 59
    await names.resolve("fabrikam", FIBER_ID, upstream, credential="c")
    assert len(upstream.calls) == 1
    now[0] += 2
    assert names.cached("fabrikam", FIBER_ID) is None
    await names.resolve("fabrikam", FIBER_ID, upstream, credential="c")
    assert len(upstream.calls) == 2


async def test_the_cache_is_bounded() -> None:
    names, upstream = ProjectNames(max_entries=2), Upstream()
    await names.resolve("fabrikam", FIBER_ID, upstream, credential="c")
    await names.resolve("fabrikam", OPS_ID, upstream, credential="c")
    assert len(names) == 2  # the second pair pushed the first out
    assert names.cached("fabrikam", FIBER_ID) is None
    assert names.cached("fabrikam", OPS_ID) == ProjectRef(OPS_ID, "Contoso-Ops")


async def test_concurrent_requests_share_one_lookup_even_when_the_first_goes_away() -> None:
    names = ProjectNames()
    started, release = asyncio.Event(), asyncio.Event()
    calls = []

    async def slow(organization: str, project: str) -> tuple[str, str] | None:
        calls.append(project)
        started.set()
        await release.wait()
        return FIBER_ID, "Fabrikam-Fiber"

    callers = [
        asyncio.ensure_future(names.resolve("fabrikam", FIBER_ID, slow, credential="c"))
        for _ in range(5)
    ]
    await started.wait()  # tasks start in order: every caller has joined the flight by now
    callers[0].cancel()  # the caller that started the lookup goes away
    other = asyncio.ensure_future(names.resolve("fabrikam", FIBER_ID, slow, credential="other"))
    release.set()
    results = await asyncio.gather(*callers[1:], other)
    assert results == [ProjectRef(FIBER_ID, "Fabrikam-Fiber")] * 5
    assert calls == [FIBER_ID, FIBER_ID]  # one per upstream credential
    with pytest.raises(asyncio.CancelledError):
        await callers[0]


def test_the_lookup_path_quotes_what_it_is_given() -> None:
    assert (
        lookup_path("fabrikam", "Fabrikam Fiber/x")
        == "/fabrikam/_apis/projects/Fabrikam%20Fiber%2Fx"
    )


@pytest.mark.parametrize(
    ("body", "asked", "expected"),
    [
        ({"id": FIBER_ID, "name": "Fabrikam-Fiber"}, FIBER_ID, (FIBER_ID, "Fabrikam-Fiber")),
        ({"id": FIBER_ID.upper(), "name": "F"}, FIBER_ID, (FIBER_ID, "F")),
        (
            {"id": FIBER_ID, "name": "Fabrikam-Fiber"},
            "fabrikam-fiber",
            (FIBER_ID, "Fabrikam-Fiber"),
        ),
        ({"id": OPS_ID, "name": "Fabrikam-Fiber"}, FIBER_ID, None),  # another project
        ({"id": FIBER_ID, "name": "Contoso-Ops"}, "Fabrikam-Fiber", None),
        ({"id": "not-a-guid", "name": "x"}, "x", None),
        ({"id": FIBER_ID, "name": ""}, FIBER_ID, None),
        ({"id": FIBER_ID}, FIBER_ID, None),
        ([FIBER_ID], FIBER_ID, None),
    ],
)
def test_answers_are_untrusted(body: object, asked: str, expected: object) -> None:
    assert parse_project(json.dumps(body).encode(), asked) == expected


def test_an_answer_that_is_not_json_names_nothing() -> None:
    assert parse_project(b"<html>sign in</html>", FIBER_ID) is None
    assert parse_project(b"\xff\xfe", FIBER_ID) is None
