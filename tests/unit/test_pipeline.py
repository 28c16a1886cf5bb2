"""The pipeline's own pieces: composition order, and request ids."""

from __future__ import annotations

import subprocess
import sys
import uuid

from aiohttp import web

from gateway.pipeline import Call, Next, chain
from gateway.request_ids import RequestIds


def test_request_ids_are_version_4_uuids_and_unique() -> None:
    ids = RequestIds()
    seen = [ids() for _ in range(20000)]
    for rid in seen:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len(set(seen)) == len(seen)
    assert RequestIds()() not in seen  # another process draws other random bits


def test_request_ids_counter_wraps_within_the_node_field() -> None:
    ids = RequestIds()
    ids._count = (1 << 48) - 2
    last, wrapped = ids(), ids()
    assert last.endswith("-ffffffffffff") and wrapped.endswith("-000000000000")
    assert last[:-12] == wrapped[:-12]
    assert uuid.UUID(wrapped).version == 4


_FORK = """
import os
from gateway.request_ids import new_request_id
reader, writer = os.pipe()
before = new_request_id()
pid = os.fork()
if pid == 0:
    os.write(writer, new_request_id().encode())
    os._exit(0)
os.close(writer)
child = os.read(reader, 64).decode()
os.waitpid(pid, 0)
print(before, child)
"""


def test_a_forked_worker_draws_other_request_ids() -> None:
    # in a fresh single-threaded interpreter (workers are exec'd; a fork is anyone else's)
    out = subprocess.run(
        [sys.executable, "-c", _FORK], capture_output=True, text=True, check=True
    ).stdout
    before, child = out.split()
    assert uuid.UUID(child).version == 4
    assert child[:-12] != before[:-12]  # not the parent's random bits with the next count


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
