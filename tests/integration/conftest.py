"""Fixtures shared by integration test modules (defined next to the helpers they use)."""

from __future__ import annotations

from tests.integration.ops_support import upstream
from tests.integration.tokens_support import started

__all__ = ["started", "upstream"]
