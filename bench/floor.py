"""The gateway's process with its pipeline replaced: the floor under what its stages may cost.

    python bench/floor.py bare|stages run -c gateway.yaml --workers 1

Runs `azdo-gateway run` (the same listener, the same `ClientSession`, the
same configuration and event loop) with `Gateway.handle` replaced by
- `bare`: `proxy_bench.bare_forward`, what the bare forwarder does for a request;
- `stages`: as many stages as `PIPELINE` holds, composed by the same
  `pipeline.chain`, each doing nothing but handing the call on, the last one
  the bare forward.

`instructions.py --floor` counts both beside the gateway: the first is what
the gateway's process costs with no work of its own, the second adds only the
pipeline's skeleton (a `Call` and one link of the chain per stage). What a
request costs above the second is the stages' own work.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402

from gateway import app, cli  # noqa: E402
from gateway.pipeline import PIPELINE, Call, Next, chain  # noqa: E402

_forward: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None


def _bare(gateway: app.Gateway, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
    """The bare forward, on the gateway's own session (made once)."""
    global _forward
    if _forward is None:
        assert gateway.forwarder.session is not None
        origin = gateway.runtime.forwarding.origins["main"]
        _forward = pb.bare_forward(origin, gateway.forwarder.session)
    return _forward(request)


async def _pass(call: Call, next: Next) -> web.StreamResponse:
    return await next(call)


async def _last(call: Call, next: Next) -> web.StreamResponse:
    return await _bare(call.gateway, call.request)


def main() -> int:
    variant = sys.argv.pop(1)
    if variant == "bare":

        async def handle(self: app.Gateway, request: web.BaseRequest) -> web.StreamResponse:
            return await _bare(self, request)

    elif variant == "stages":
        skeleton = chain([_pass] * (len(PIPELINE) - 1) + [_last])

        async def handle(self: app.Gateway, request: web.BaseRequest) -> web.StreamResponse:
            return await skeleton(Call(request, self))

    else:
        raise SystemExit(f"floor.py: expected bare or stages, got {variant!r}")
    app.Gateway.handle = handle  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
