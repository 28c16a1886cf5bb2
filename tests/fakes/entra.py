"""The Entra ID stand-in plus what only tests need: request counting, faults, stalls.

entra = await make_entra(token_lifetime_s=60)
entra.requests["client_credentials"]          # token requests per grant
entra.requests_by[("on_behalf_of", oid)]      # ... per grant and client / user / identity
entra.fail(status=503, error="temporarily_unavailable", code=...)   # until heal()
entra.fail(times=1)                           # only the next request
gate = entra.stall()                          # requests wait until gate.set()
entra.mint_access_token(alg="none")           # forged tokens too (tests/fakes/jwtforge.py)
entra.mint_access_token(kid="never-published")
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web

from gateway.demo.entra import EntraStandIn, aad_error
from gateway.tasks import spawn
from tests.fakes.jwtforge import forge


@dataclass
class Fault:
    status: int
    error: str
    code: int
    description: str
    times: int | None  # None: until heal()
    grant: str | None  # None: every grant
    retry_after: str | None


class FakeEntra(EntraStandIn):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: Counter[str] = Counter()
        self.requests_by: Counter[tuple[str, str]] = Counter()
        self.faults: list[Fault] = []
        self._gate: asyncio.Event | None = None
        self.stalled = 0  # requests currently held by stall()
        self.assertions: list[str] = []  # client_assertion values received, in order
        self._held = asyncio.Condition()
        self._counted = asyncio.Condition()

    def mint_access_token(  # type: ignore[override]
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """The stand-in's token, or with `alg` "none"/"HS256" or a `kid` the stand-in
        does not publish, a forged one (same claims)."""
        if alg == "RS256" and (kid is None or kid in self.keys.kids):
            return super().mint_access_token(claims, kid=kid, headers=headers, **kwargs)
        payload = self.access_token_claims(claims, **kwargs)
        return forge(self.keys, payload, alg=alg, kid=kid, headers=headers)

    def identity(self, *audiences: str) -> dict[str, Any]:
        """The gateway's `identity` config block that trusts this stand-in."""
        block: dict[str, Any] = {"authority_host": self.url, "tenant_id": self.tenant_id}
        if audiences:
            block["audiences"] = list(audiences)
        block["ca_file"] = str(self.ca_file)
        return block

    def fail(
        self,
        *,
        status: int = 503,
        error: str = "temporarily_unavailable",
        code: int = 50196,
        description: str = "The server is temporarily unavailable.",
        times: int | None = None,
        grant: str | None = None,
        retry_after: str | None = "0",
    ) -> None:
        """Answer token requests with an Entra-style error. `retry_after="0"` keeps
        MSAL from replaying the error from its own throttling cache."""
        self.faults.append(Fault(status, error, code, description, times, grant, retry_after))

    def heal(self) -> None:
        self.faults.clear()
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def stall(self) -> asyncio.Event:
        """Hold every token request until the returned event is set (or heal())."""
        self._gate = asyncio.Event()
        return self._gate

    async def wait_requests(self, grant: str, n: int) -> None:
        """Return once `n` token requests of `grant` have arrived (served or not)."""
        async with self._counted:
            await self._counted.wait_for(lambda: self.requests[grant] >= n)

    async def wait_stalled(self, n: int = 1) -> None:
        """Return once `n` token requests are held by stall()."""
        async with self._held:
            await self._held.wait_for(lambda: self.stalled >= n)

    @staticmethod
    def _subject(grant: str, params: Mapping[str, str]) -> str:
        if grant == "on_behalf_of":
            try:
                claims = jwt.decode(
                    params.get("assertion", ""), options={"verify_signature": False}
                )
                return str(claims.get("oid", "?"))
            except jwt.PyJWTError:
                return "?"
        if grant == "managed_identity":
            for k in ("client_id", "object_id", "mi_res_id", "msi_res_id", "principal_id"):
                if params.get(k):
                    return params[k]
            return "system"
        return params.get("client_id", "?")

    async def intercept(
        self, grant: str, params: Mapping[str, str], request: web.Request
    ) -> web.StreamResponse | None:
        async with self._counted:
            self.requests[grant] += 1
            self.requests_by[(grant, self._subject(grant, params))] += 1
            if params.get("client_assertion"):
                self.assertions.append(params["client_assertion"])
            self._counted.notify_all()
        gate = self._gate
        if gate is not None:
            async with self._held:
                self.stalled += 1
                self._held.notify_all()
            try:
                await gate.wait()
            finally:
                self.stalled -= 1
        for fault in list(self.faults):
            if fault.grant not in (None, grant):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            response = aad_error(fault.status, fault.error, fault.code, fault.description)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        return None


MakeEntra = Callable[..., Awaitable[FakeEntra]]


@pytest.fixture
async def make_entra() -> AsyncIterator[MakeEntra]:
    """Factory: `await make_entra(**EntraStandIn kwargs)` -> a started FakeEntra."""
    started: list[FakeEntra] = []

    async def make(*args: Any, **kwargs: Any) -> FakeEntra:
        fake = FakeEntra(*args, **kwargs)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.heal()
        await fake.close()


class RecordingMetrics:
    """A TokenMetrics that records every event and lets tests wait for one."""

    def __init__(self) -> None:
        self.acquisitions: Counter[tuple[str, str]] = Counter()
        self.hits: Counter[str] = Counter()
        self.expiry: dict[str, float | None] = {}
        self._changed = asyncio.Condition()

    def token_acquired(self, credential: str, result: str) -> None:
        self.acquisitions[(credential, result)] += 1
        spawn(self._notify())

    def token_cache_hit(self, credential: str) -> None:
        self.hits[credential] += 1

    def token_expiry(self, credential: str, expires_at: float | None) -> None:
        self.expiry[credential] = expires_at

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, credential: str, result: str, n: int = 1) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.acquisitions[(credential, result)] >= n)
