"""The Entra ID stand-in plus what only tests need: request counting, faults, stalls,
certificate and federated-token assertions (tests/fakes/entra_assertions.py), managed
identity endpoints (tests/fakes/entra_msi.py), forged tokens.

entra = await make_entra(token_lifetime_s=60)
entra.register_app("app", certificate_pem=pem)   # or trusted_subject=, federated_subject=
entra.mint_federated_token(subject)           # a workload token for federated_subject
entra.register_managed_identity(client_id="mi")   # served at msi_endpoint and IMDS
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
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web

from gateway.demo.entra import EntraStandIn, aad_error, grant_kind
from gateway.demo.entra_grants import AppRegistration, GrantError, find_app
from gateway.demo.jwtmint import SigningKeys
from gateway.tasks import spawn
from tests.fakes.entra_assertions import FEDERATED_AUDIENCE, ClientProofs, check_assertion
from tests.fakes.entra_msi import ManagedIdentityEndpoints, ManagedIdentityRecord
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


class FakeEntra(EntraStandIn, ManagedIdentityEndpoints):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.federation_keys = SigningKeys()  # the "cluster OIDC issuer" of workload tokens
        self.proofs: dict[str, ClientProofs] = {}  # client_id -> certificates, federations
        self.managed_identities: list[ManagedIdentityRecord] = []
        self.identity_header = uuid.uuid4().hex  # App Service's IDENTITY_HEADER secret
        self.requests: Counter[str] = Counter()
        self.requests_by: Counter[tuple[str, str]] = Counter()
        self.faults: list[Fault] = []
        self._gate: asyncio.Event | None = None
        self.stalled = 0  # requests currently held by stall()
        self.assertions: list[str] = []  # client_assertion values received, in order
        self._held = asyncio.Condition()
        self._counted = asyncio.Condition()

    # --- certificate and federated-token assertions ----------------------------

    @property
    def federation_issuer(self) -> str:
        return f"{self.url}/federation"

    def register_app(  # type: ignore[override]
        self,
        client_id: str | None = None,
        *,
        certificate_pem: bytes | None = None,
        trusted_subject: str | None = None,
        federated_subject: str | None = None,
        **kwargs: Any,
    ) -> AppRegistration:
        """The stand-in's registration, and: `certificate_pem` registers a certificate by
        thumbprint; `trusted_subject` accepts any certificate with that common name issued
        by `self.ca` when the assertion carries it in `x5c` (subject-name/issuer auth);
        `federated_subject` trusts workload tokens from `federation_issuer` with that `sub`.
        """
        app = super().register_app(client_id, **kwargs)
        proofs = self.proofs.setdefault(app.client_id, ClientProofs(app.client_id))
        if certificate_pem is not None:
            proofs.add_certificate(certificate_pem)
        if trusted_subject is not None:
            proofs.trusted_subjects.add(trusted_subject)
        if federated_subject is not None:
            proofs.federated.append((self.federation_issuer, federated_subject, FEDERATED_AUDIENCE))
        return app

    def mint_federated_token(
        self, subject: str, *, audience: str = FEDERATED_AUDIENCE, lifetime_s: float = 3600
    ) -> str:
        """A workload token (what AKS projects into AZURE_FEDERATED_TOKEN_FILE)."""
        now = int(time.time())
        payload = {
            "iss": self.federation_issuer,
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime_s),
            "jti": uuid.uuid4().hex,
        }
        return self.federation_keys.sign(payload)

    def _authenticate(self, form: Mapping[str, str], tenant: str) -> AppRegistration:
        if "client_secret" in form or not form.get("client_assertion"):
            return super()._authenticate(form, tenant)
        app = find_app(self.apps, form)
        proofs = self.proofs.get(app.client_id) or ClientProofs(app.client_id)
        check_assertion(proofs, form, self.token_endpoint(tenant), self.ca, self.federation_keys)
        return app

    # --- managed identities --------------------------------------------------------

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_get("/msi/token", self._msi_app_service)
        app.router.add_get("/metadata/identity/oauth2/token", self._msi_imds)
        return app

    # --- forged tokens -----------------------------------------------------------------

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

    # --- request counting and faults ------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            grant = grant_kind(form) if request.match_info["tenant"] in self.tenants else None
        except GrantError:
            grant = None  # the stand-in answers the error
        if grant is not None:
            hooked = await self.intercept(grant, form, request)
            if hooked is not None:
                return hooked
        return await super()._token(request)

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
        """Called before each token request is served ("client_credentials",
        "on_behalf_of", "managed_identity"); a response returned is sent instead."""
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
