"""Cost of getting the upstream token for a request, and whether requests ever wait.

    python bench/tokens_bench.py [N]                      # warm-path micro-benchmark
    python bench/tokens_bench.py --load 600 --lifetime 60 # load run: 60 s tokens for 10 min

Runs the demo Entra ID stand-in on loopback and a real TokenBroker (MSAL unmodified).
Warm path: `TokenBroker.acquire` for a service principal and for an on-behalf-of
user whose token is cached, with metrics off and with the Prometheus metrics the
gateway uses. Target: under 5 µs, no lock awaited.
Load run: concurrent requests for `--load` seconds with `--lifetime`-second tokens;
counts requests that did not find a valid token in the cache (that waited on an
acquisition). Target: zero.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.model import Client, Config, GatewayConfig  # noqa: E402
from gateway.demo.entra import EntraStandIn  # noqa: E402
from gateway.observability.metrics import Metrics  # noqa: E402
from gateway.tokens import TokenBroker  # noqa: E402
from gateway.tokens.base import NoMetrics  # noqa: E402
from gateway.types import ClientIdentity  # noqa: E402


class Counting(NoMetrics):
    def __init__(self) -> None:
        self.hits = 0
        self.acquisitions: dict[str, int] = {}

    def token_cache_hit(self, credential: str) -> None:
        self.hits += 1

    def token_acquired(self, credential: str, result: str) -> None:
        self.acquisitions[result] = self.acquisitions.get(result, 0) + 1


def make_config(entra: EntraStandIn) -> Config:
    gw = GatewayConfig.model_validate(
        {
            "identity": {"authority_host": entra.url, "tenant_id": entra.tenant_id,
                         "ca_file": str(entra.ca_file)},
            "credentials": {
                "sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"},
                "obo": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "g"},
            },
        }
    )  # fmt: skip
    clients = (
        Client(name="ci", credential="sp", scopes=("vso.code",)),
        Client(name="people", credential="obo", scopes=("vso.code",)),
    )
    return Config(path=Path("gateway.yaml"), gateway=gw, clients=clients, routes=())


async def per_call_us(broker: TokenBroker, ident: ClientIdentity, client: Client, n: int) -> float:
    for _ in range(1000):
        await broker.acquire(ident, client)
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await broker.acquire(ident, client)
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


async def warm_path(entra: EntraStandIn, config: Config, n: int) -> None:
    app = ClientIdentity(client="ci", auth_method="api_key", subject="k1")
    user_token = entra.mint_access_token({"oid": "alice"})
    user = ClientIdentity(client="people", auth_method="entra", subject="alice",
                          tenant_id=entra.tenant_id, object_id="alice",
                          user_assertion=user_token)  # fmt: skip
    ci, people = config.clients
    for label, metrics in (("metrics off", None), ("prometheus metrics", Metrics())):
        broker = TokenBroker(config, metrics=metrics)
        await broker.start()
        await broker.warm_up()
        await broker.acquire(user, people)
        sp_us = await per_call_us(broker, app, ci, n)
        obo_us = await per_call_us(broker, user, people, n)
        slot = broker._slots["sp"]
        t0 = time.perf_counter()
        for _ in range(n):
            slot.peek(time.time())
        peek_us = (time.perf_counter() - t0) / n * 1e6
        print(f"{label:>20}: service principal {sp_us:.2f} µs, on-behalf-of user "
              f"{obo_us:.2f} µs per acquire (slot.peek alone {peek_us:.2f} µs)")  # fmt: skip
        await broker.close()


async def load(entra: EntraStandIn, config: Config, seconds: float, workers: int) -> None:
    metrics = Counting()
    broker = TokenBroker(config, metrics=metrics)
    await broker.start()
    await broker.warm_up()
    app = ClientIdentity(client="ci", auth_method="api_key", subject="k1")
    ci = config.clients[0]
    calls = 0
    slowest = 0.0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal calls, slowest
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await broker.acquire(app, ci)
            slowest = max(slowest, time.perf_counter() - t0)
            calls += 1
            await asyncio.sleep(0.001)

    await asyncio.gather(*(worker() for _ in range(workers)))
    broker.flush_metrics()  # cache hits are handed over once a second
    waited = calls - metrics.hits
    print(f"load: {calls} requests over {seconds:.0f} s with {entra.token_lifetime_s:.0f} s "
          f"tokens; token acquisitions {metrics.acquisitions}; requests that waited on an "
          f"acquisition: {waited}; slowest acquire {slowest * 1e6:.0f} µs")  # fmt: skip
    await broker.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=200_000)
    parser.add_argument("--load", type=float, default=0, help="seconds of load (0: skip)")
    parser.add_argument("--lifetime", type=float, default=60, help="token lifetime, seconds")
    parser.add_argument("--workers", type=int, default=50)
    args = parser.parse_args()
    entra = EntraStandIn(token_lifetime_s=args.lifetime)
    await entra.start()
    entra.register_app("sp", secret="s")
    entra.register_app("gw", secret="g", identifier_uris=("api://azdo-gateway",))
    config = make_config(entra)
    try:
        if args.load:
            await load(entra, config, args.load, args.workers)
        else:
            await warm_path(entra, config, args.n)
    finally:
        await entra.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
