"""What every upstream credential provides, and what it raises.

A `CredentialProvider` is synchronous (MSAL is): `acquire(scopes, user_assertion)`
returns an `IssuedToken` or raises `TokenAcquisitionError`, whose `reason` is
a short bounded label (an OAuth error code such as `invalid_client`, or
`timeout`, `unreachable`, `tls_error`, ...) and whose message never holds a
secret. The broker runs providers in a bounded thread pool, never on the
event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

AZURE_DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
AZURE_DEVOPS_DEFAULT_SCOPE = AZURE_DEVOPS_RESOURCE + "/.default"

_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token from the identity provider."""

    access_token: str = field(repr=False)
    expires_at: float  # epoch seconds
    acquired_at: float  # epoch seconds
    refresh_in: float | None = None  # seconds after acquisition the provider asks a refresh

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.acquired_at)


class TokenAcquisitionError(Exception):
    """The identity provider did not give a token. Safe to log and to show in `check`."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        reason = reason.lower().replace("-", "_")
        self.reason = reason if _REASON.match(reason) else "error"
        self.message = message
        self.code = code  # AADSTS code, when Entra gave one
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class CredentialProvider(Protocol):
    """One configured upstream credential (one `credentials` entry)."""

    name: str
    kind: str  # the `type` of the credential

    def acquire(self, scopes: tuple[str, ...], user_assertion: str | None = None) -> IssuedToken:
        """Blocking: a fresh token from the identity provider (never from a cache)."""
        ...

    def close(self) -> None: ...


class TokenMetrics(Protocol):
    """What the broker reports; `gateway.observability.metrics.Metrics` implements it."""

    def token_acquired(self, credential: str, result: str) -> None: ...

    def token_cache_hit(self, credential: str) -> None: ...

    def token_expiry(self, credential: str, expires_at: float | None) -> None: ...


class NoMetrics:
    def token_acquired(self, credential: str, result: str) -> None:
        return None

    def token_cache_hit(self, credential: str) -> None:
        return None

    def token_expiry(self, credential: str, expires_at: float | None) -> None:
        return None


def redact(message: str, secrets: Iterable[str | None]) -> str:
    """`message` with every non-trivial secret in `secrets` replaced by `***`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
