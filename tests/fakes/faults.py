"""Fault injection into the request pipeline, for tests: a stage that breaks.

`with_fault(PIPELINE, before=pipeline.forward, fault=...)` is the pipeline with
one more stage, which raises `fault` (or starts the answer and then raises), so
that a test can see what a bug inside the pipeline becomes for the client, the
log, the metrics and the audit line.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.pipeline import Call, Next, Stage


class InjectedFault(RuntimeError):
    """The exception a fault stage raises (never raised by the gateway itself)."""


def raising(fault: BaseException) -> Stage:
    async def fail(call: Call, next: Next) -> web.StreamResponse:
        raise fault

    return fail


def raising_mid_answer(fault: BaseException, sent: bytes) -> Stage:
    """Sends the status line, headers and `sent` of a longer body, then raises."""

    async def fail(call: Call, next: Next) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000000"})
        await response.prepare(call.request)
        await response.write(sent)
        raise fault

    return fail


def with_fault(stages: Sequence[Stage], *, before: Stage, fault: Stage) -> tuple[Stage, ...]:
    i = list(stages).index(before)
    return (*stages[:i], fault, *stages[i:])
