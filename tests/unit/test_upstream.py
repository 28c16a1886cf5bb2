"""gateway.proxy.upstream: Deadlines (one timer bounding the blocks of many tasks, as
asyncio.timeout bounds one), `arrived` (a whole body read without waiting) and
`check` (what an answer must not be)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.model import Upstream
from gateway.proxy import upstream
from gateway.proxy.upstream import (
    BadUpstreamResponse,
    Deadline,
    Deadlines,
    arrived,
    check,
    open_session,
)


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        with deadlines.within(0.05):
            await asyncio.sleep(10)
    assert 0.04 < asyncio.get_running_loop().time() - started < 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # nothing pending for the task


async def test_a_block_within_its_deadline_is_left_alone() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    with deadlines.within(0.05) as deadline:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the deadline: the timer finds nothing to cancel
    assert not deadline.expired
    with deadlines.within(0.05):  # the timer is armed again for a later deadline
        await asyncio.sleep(0)


async def test_a_deadline_starts_when_rescheduled_and_not_after_its_block() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    with deadlines.within(None) as deadline:
        await asyncio.sleep(0.05)  # no deadline yet
        deadline.reschedule(loop.time() + 0.05)
        with pytest.raises(TimeoutError):
            with deadline:
                await asyncio.sleep(10)
    with deadlines.within(None) as deadline:
        pass
    deadline.reschedule(loop.time())  # the block has ended: nothing
    await asyncio.sleep(0.02)
    assert not deadline.expired


async def test_a_later_deadline_moved_earlier_expires_first() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    order: list[str] = []

    async def bounded(name: str, delay: float, moved: float | None = None) -> None:
        try:
            with deadlines.within(delay) as deadline:
                if moved is not None:
                    deadline.reschedule(loop.time() + moved)
                await asyncio.sleep(10)
        except TimeoutError:
            order.append(name)

    await asyncio.gather(bounded("a", 0.15), bounded("b", 5, moved=0.05), bounded("c", 0.1))
    assert order == ["b", "c", "a"]


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    entered = asyncio.Event()

    async def bounded(delay: float) -> None:
        with deadlines.within(delay):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.ensure_future(bounded(5))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_elsewhere_as_the_deadline_passes_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    entered = asyncio.Event()
    seen: list[Deadline] = []

    async def bounded() -> None:
        with deadlines.within(None) as deadline:
            seen.append(deadline)
            entered.set()
            deadline.reschedule(loop.time())
            await asyncio.sleep(10)

    task = asyncio.ensure_future(bounded())
    await entered.wait()  # the deadline has passed: the timer runs in this loop turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[0].expired
    assert task.cancelling() == 1  # the deadline's cancel was taken back, the other one stays


async def test_a_body_that_has_arrived_is_read_as_read_would(aiohttp_server: Any) -> None:
    release = asyncio.Event()

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100)

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"part")
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/whole", whole)
    app.router.add_get("/held", held)
    server = await aiohttp_server(app)
    session = open_session(Upstream())
    try:
        async with session.get(server.make_url("/whole")) as up:
            await up.content.wait_eof()
            assert arrived(up) == b"x" * 100
            assert await up.read() == b"x" * 100
        async with session.get(server.make_url("/held")) as up:
            assert arrived(up) is None
            release.set()
            assert await up.read() == b"part"
    finally:
        await session.close()


def _answer(*names: bytes) -> Any:
    raw = tuple((name, b"v") for name in names)
    return SimpleNamespace(status=200, reason="OK", raw_headers=raw, headers=CIMultiDict())


def test_header_names_that_are_not_tokens_are_refused_whatever_was_seen() -> None:
    for _ in range(2):  # the second time, the names are known tokens
        check(_answer(b"Content-Type", b"X-VSS-E2EID"))
    for bad in (b"X Bad", b"X-Bad:", b"", b"\xc3\xa9"):
        with pytest.raises(BadUpstreamResponse, match="not a token"):
            check(_answer(b"Content-Type", bad))
    many = [b"X-%d" % i for i in range(3000)]
    check(_answer(*many))
    assert len(upstream._TOKENS_SEEN) <= upstream.MAX_TOKENS_SEEN
    with pytest.raises(BadUpstreamResponse):
        check(_answer(*many, b"X Bad"))
