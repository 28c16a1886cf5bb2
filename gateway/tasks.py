"""Background tasks that are not garbage-collected while they run."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start `coro` as a task and keep a reference to it until it is done."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - the one sanctioned place
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
