"""External programs a test needs (git-lfs, node, npm, redis-server, curl, ...).

`require("git-lfs", "apt-get install git-lfs")` returns the program's path, or skips
the test with a message saying what to install. Under CI (`CI` set to a true value,
as `.ci/run` runs) a missing program fails the test instead: CI never skips them.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(program: str, install: str) -> str:
    """The path of `program`; skip (or, under CI, fail) with how to install it."""
    path = shutil.which(program)
    if path:
        return path
    message = f"needs {program!r} on PATH ({install})"
    if _ci():
        pytest.fail(f"{message}; .ci/run must install it", pytrace=False)
    pytest.skip(message)
