"""Stage 5: forward the request upstream and stream the answer back."""

from __future__ import annotations

from gateway.proxy.forward import Forwarder, Forwarding

__all__ = ["Forwarder", "Forwarding"]
