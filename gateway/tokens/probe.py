"""`azdo-gateway check --probe`: try every configured credential once.

Takes a loaded `Config`; returns one `ProbeResult` per credential, in
configuration order. Entra credentials acquire a token for Azure DevOps
(on-behalf-of ones prove their client authentication with an app-only token,
as the exchange itself needs a user); PATs are checked for being readable.
Blocking; probes run in parallel threads. Messages carry AADSTS codes, never
a secret.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.config.model import Config, OnBehalfOfCredential, PatCredential
from gateway.tokens.base import AZURE_DEVOPS_DEFAULT_SCOPE, TokenAcquisitionError
from gateway.tokens.msal_confidential import ConfidentialCredential
from gateway.tokens.pat import pat_header
from gateway.tokens.providers import EntraCredential, provider_for


@dataclass(frozen=True, slots=True)
class ProbeResult:
    credential: str
    type: str
    ok: bool
    detail: str  # what happened, safe to print
    reason: str = "ok"  # failure reason label (as in the token metrics)
    seconds: float = 0.0

    def line(self) -> str:
        status = "ok" if self.ok else f"FAILED ({self.reason})"
        return f"credential {self.credential} [{self.type}]: {status}: {self.detail}"


def _probe_one(config: Config, name: str) -> ProbeResult:
    cred = config.gateway.credentials[name]
    started = time.monotonic()
    try:
        if isinstance(cred, PatCredential):
            pat_header(cred)
            detail = "PAT readable (Azure DevOps Server checks it on first use)"
        else:
            detail = _probe_entra(config, name, cred)
    except TokenAcquisitionError as err:
        code = f" [AADSTS{err.code}]" if err.code and "AADSTS" not in err.message else ""
        return ProbeResult(
            name, cred.type, False, err.message + code, err.reason, time.monotonic() - started
        )
    return ProbeResult(name, cred.type, True, detail, "ok", time.monotonic() - started)


def _probe_entra(config: Config, name: str, cred: EntraCredential) -> str:
    if isinstance(cred, OnBehalfOfCredential):
        provider = ConfidentialCredential(name, cred, config.gateway.identity)
    else:
        provider = provider_for(name, cred, config.gateway.identity, config.gateway.upstream)  # type: ignore[assignment]
    try:
        token = provider.acquire((AZURE_DEVOPS_DEFAULT_SCOPE,))
    finally:
        provider.close()
    left = token.expires_at - time.time()
    if isinstance(cred, OnBehalfOfCredential):
        return (
            f"client authentication works (app token expires in {left:.0f}s); "
            "the exchange itself needs a signed-in user"
        )
    return f"token for Azure DevOps acquired, expires in {left:.0f}s"


def probe(config: Config) -> list[ProbeResult]:
    """Try each configured credential; never raises for a credential's failure."""
    names = list(config.gateway.credentials)
    if not names:
        return []
    with ThreadPoolExecutor(min(8, len(names)), thread_name_prefix="azdo-gw-probe") as pool:
        return list(pool.map(lambda n: _probe_one(config, n), names))
