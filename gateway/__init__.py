"""azdo-gateway: a least-privilege reverse proxy for Azure DevOps Services."""

from __future__ import annotations

__version__ = "0.1.0"
