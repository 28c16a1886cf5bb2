"""What the MSAL-based credentials share: the HTTP session MSAL uses, a token
cache that stores nothing, and turning MSAL's answers into `IssuedToken` or
`TokenAcquisitionError`.

The session pins trust to `identity.ca_file` (added to the default bundle).
# SECURITY: `requests` lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a
# session's `verify` when `trust_env` is on (Session.merge_environment_settings
# gives the per-request environment value precedence), and reads ~/.netrc for
# credentials. The session therefore runs with `trust_env=False`; its proxy is
# the gateway's egress proxy (`upstream.proxy`, or the environment's with
# `upstream.trust_env`), for the authority host only.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msal
import requests
import requests.adapters

from gateway.config.model import Identity, Upstream
from gateway.tokens.base import IssuedToken, TokenAcquisitionError, redact

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
_AADSTS = re.compile(r"^(AADSTS\d+: .*?)(?:\s+Trace ID:.*)?$", re.S)


class NoTokenCache(msal.TokenCache):  # type: ignore[misc]
    """The broker caches tokens itself. MSAL's own cache would keep every user's
    tokens for the life of the process, and answer a refresh from itself."""

    def add(self, event: Any, now: Any = None) -> None:
        return None


class NoHttpCache(dict[str, Any]):
    """MSAL's `http_cache` that keeps nothing. MSAL would otherwise replay an error
    answer (a 400 for 60 s, a 5xx for its Retry-After) instead of asking again;
    the broker does its own backoff, and must see a fixed credential at once."""

    def __setitem__(self, key: str, value: Any) -> None:
        return None


class IdentitySession(requests.Session):
    """requests.Session for MSAL: fixed trust, explicit proxies, default timeouts."""

    def __init__(self, verify: str | bool, proxies: Mapping[str, str]) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = verify
        self._seen = threading.local()
        self.proxies.update(proxies)
        adapter = requests.adapters.HTTPAdapter(max_retries=1)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        self._seen.retry_after = None
        response = super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]
        self._seen.retry_after = response.headers.get("Retry-After")
        return response

    def retry_after(self) -> float | None:
        """Retry-After (seconds) of the last answer this thread got, if it had one."""
        value = getattr(self._seen, "retry_after", None)
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None  # an HTTP date: rare from Entra ID; the broker's backoff applies


class TrustStore:
    """The CA bundle file for `verify`: certifi's plus `ca_file`, built once."""

    def __init__(self, ca_file: str | None) -> None:
        self._tmp: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.verify: str | bool = True
        if ca_file:
            import certifi

            extra = Path(ca_file).read_bytes()
            self._tmp = tempfile.NamedTemporaryFile(prefix="azdo-gateway-ca-", suffix=".pem")
            self._tmp.write(Path(certifi.where()).read_bytes() + b"\n" + extra)
            self._tmp.flush()
            self.verify = self._tmp.name

    @classmethod
    def open(cls, ca_file: str | None) -> TrustStore:
        """The store for `identity.ca_file`; an unreadable file is a configuration error."""
        try:
            return cls(ca_file)
        except OSError as err:
            raise TokenAcquisitionError(
                "config_error", f"cannot read identity.ca_file: {err.strerror}"
            ) from None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.close()
            self._tmp = None


def session_for(trust: TrustStore, url: str | None, egress: Upstream) -> IdentitySession:
    """A session that reaches `url` (through the egress proxy `egress.proxy_for(url)`,
    if any); `url=None`: a local endpoint (managed identity), never proxied."""
    proxy = egress.proxy_for(url) if url else None
    return IdentitySession(trust.verify, {"http": proxy, "https": proxy} if proxy else {})


class _Credential(Protocol):
    @property
    def type(self) -> str: ...


CredentialT = TypeVar("CredentialT", bound=_Credential)


class MsalProvider(Generic[CredentialT]):
    """What every MSAL-backed provider holds: its `credentials` entry, the identity
    settings, and a trust store and HTTP session that subclasses build under `_lock`.

    Acquisitions run in threads; each runs inside `_acquiring()`. `close()` leaves the
    session and the trust store (a temporary file its connections load) to the last
    acquisition still in flight: it waits `close_wait_s` for them, then returns."""

    close_wait_s = 5.0

    def __init__(
        self, name: str, config: CredentialT, identity: Identity, egress: Upstream | None = None
    ) -> None:
        self.name = name
        self.kind: str = config.type
        self.config = config
        self.identity = identity
        self.egress = egress or Upstream()  # whose proxy the identity provider is reached by
        self._trust: TrustStore | None = None
        self._session: IdentitySession | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # acquisitions in flight
        self._closing = False  # closed while some were: the last one releases

    def _trust_store(self) -> TrustStore:
        """The trust store, opened on first use (call with `_lock` held)."""
        if self._trust is None:
            self._trust = TrustStore.open(self.identity.ca_file)
        return self._trust

    @contextlib.contextmanager
    def _acquiring(self) -> Iterator[None]:
        """Around one acquisition: what it uses stays open until it ends."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()
                    if self._closing:
                        self._free()

    def _release(self) -> None:
        """Close the session and the trust store (call with `_lock` held) once no
        acquisition is in flight; past `close_wait_s`, the last one to end does."""
        self._idle.wait_for(lambda: not self._busy, timeout=self.close_wait_s)
        if self._busy:
            self._closing = True
        else:
            self._free()

    def _free(self) -> None:
        self._closing = False
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._trust is not None:
            self._trust.close()
            self._trust = None


def _description(result: Mapping[str, Any]) -> str:
    text = str(result.get("error_description") or result.get("error") or "no token in answer")
    match = _AADSTS.match(text.strip())
    return (match.group(1) if match else text).strip()[:500]


def issued_from(
    result: Mapping[str, Any] | None, started: float, secrets: Iterable[str | None] = ()
) -> IssuedToken:
    """An MSAL result dict as an IssuedToken, or the error it describes."""
    if not result:
        raise TokenAcquisitionError("bad_response", "the identity provider sent no answer")
    token = result.get("access_token")
    if not token:
        codes = result.get("error_codes") or []
        code = int(codes[0]) if codes and str(codes[0]).isdigit() else None
        error = str(result.get("error") or "bad_response")
        raise TokenAcquisitionError(error, redact(_description(result), secrets), code=code)
    try:
        expires_in = float(result.get("expires_in", 3600))
    except (TypeError, ValueError):
        expires_in = 3600.0
    # Entra's `refresh_in` reaches us as MSAL's `refresh_on` (epoch seconds).
    refresh_in = result.get("refresh_in")
    refresh_on = result.get("refresh_on")
    if isinstance(refresh_on, int | float) and not isinstance(refresh_in, int | float):
        refresh_in = max(0.0, float(refresh_on) - started)
    return IssuedToken(
        access_token=str(token),
        expires_at=started + max(0.0, expires_in),
        acquired_at=started,
        refresh_in=float(refresh_in) if isinstance(refresh_in, int | float) else None,
    )


def call_msal(
    call: Callable[[], Mapping[str, Any] | None],
    secrets: Iterable[str | None] = (),
    session: Callable[[], IdentitySession | None] | None = None,
) -> IssuedToken:
    """Run one MSAL acquisition; map failures to bounded reasons, with the
    identity provider's Retry-After when it sent one."""
    try:
        return _call_msal(call, tuple(secrets))
    except TokenAcquisitionError as err:
        used = session() if session is not None else None
        if used is not None and err.retry_after is None:
            err.retry_after = used.retry_after()
        raise


def _call_msal(
    call: Callable[[], Mapping[str, Any] | None], secrets: tuple[str | None, ...]
) -> IssuedToken:
    started = time.time()
    try:
        result = call()
    except TokenAcquisitionError:
        raise
    except requests.exceptions.SSLError as err:
        raise TokenAcquisitionError(
            "tls_error",
            "TLS verification of the identity provider failed "
            f"(check identity.ca_file): {_first_line(err, secrets)}",
        ) from None
    except requests.exceptions.Timeout:
        raise TokenAcquisitionError(
            "timeout", "the identity provider did not answer in time"
        ) from None
    except requests.exceptions.ConnectionError as err:
        raise TokenAcquisitionError(
            "unreachable", f"cannot reach the identity provider: {_first_line(err, secrets)}"
        ) from None
    except msal.exceptions.MsalServiceError as err:  # 5xx from the token endpoint
        raise TokenAcquisitionError(
            "server_error", f"the identity provider failed: {_first_line(err, secrets)}"
        ) from None
    except msal.managed_identity.ManagedIdentityError as err:
        raise TokenAcquisitionError(
            "managed_identity_unavailable",
            f"no managed identity endpoint here: {_first_line(err, secrets)}",
        ) from None
    except ValueError as err:  # discovery failures, malformed answers, bad key material
        reason = "discovery_failed" if "Discovery" in str(err) else "bad_response"
        raise TokenAcquisitionError(reason, _first_line(err, secrets)) from None
    except OSError as err:
        raise TokenAcquisitionError("unreachable", _first_line(err, secrets)) from None
    return issued_from(result, started, secrets)


def _first_line(err: BaseException, secrets: Iterable[str | None]) -> str:
    text = str(err).strip().splitlines()
    return redact((text[0] if text else type(err).__name__)[:300], secrets)
