"""The pipeline's own pieces: composition order, and request ids built without uuid4."""

from __future__ import annotations

import random
import uuid

from aiohttp import web

from gateway.pipeline import Call, Next, chain, new_request_id


def test_request_ids_are_what_uuid4_gives() -> None:
    """The fast build (bench/README.md) against the plain one: the same set of values."""
    random.seed(1234)
    for _ in range(20000):
        rid = new_request_id()
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len({new_request_id() for _ in range(10000)}) == 10000


async def test_stages_run_in_order_and_each_may_answer() -> None:
    seen: list[str] = []

    def stage(name: str, answer: bool = False):  # type: ignore[no-untyped-def]
        async def run(call: Call, next: Next) -> web.StreamResponse:
            seen.append(name)
            if answer:
                return web.Response(status=204)
            response = await next(call)
            seen.append("/" + name)
            return response

        return run

    handler = chain([stage("a"), stage("b"), stage("c", answer=True), stage("never")])
    call = Call.__new__(Call)
    response = await handler(call)
    assert response.status == 204
    assert seen == ["a", "b", "c", "/b", "/a"]
