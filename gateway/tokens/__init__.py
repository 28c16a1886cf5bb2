"""Stage 4: the upstream credential to inject.

`TokenBroker(config).acquire(identity, client)` returns the `UpstreamToken`
(the `Authorization` header value) for the credential the client's policy
names: an Entra ID token acquired with MSAL (client secret, certificate,
managed identity, workload identity, or on behalf of the calling user) or a PAT.
Tokens are cached per credential (per tenant, user and scope set for
on-behalf-of, bounded, never served to another user) and refreshed ahead of
expiry; see `gateway.tokens.cache`. Raises `CredentialUnavailable` (503 with
Retry-After) when no valid token can be had, and `Unauthenticated` when an
on-behalf-of credential is used without a caller Entra ID token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import orjson
from cachetools import LRUCache
from pydantic import SecretStr

from gateway.config.model import (
    Client,
    Config,
    OnBehalfOfCredential,
    PatCredential,
)
from gateway.errors import CredentialUnavailable, Unauthenticated
from gateway.state import RedisStore
from gateway.tokens.base import (
    AZURE_DEVOPS_DEFAULT_SCOPE,
    CredentialProvider,
    IssuedToken,
    NoMetrics,
    TokenAcquisitionError,
    TokenMetrics,
)
from gateway.tokens.cache import Fetch, RefreshPolicy, TokenSlot
from gateway.tokens.on_behalf_of import delegated_scopes
from gateway.tokens.pat import pat_header
from gateway.tokens.probe import ProbeResult, probe
from gateway.tokens.providers import provider_for
from gateway.tokens.shared import SharedTokens
from gateway.types import ClientIdentity, UpstreamToken

__all__ = ["ProbeResult", "RefreshPolicy", "TokenBroker", "probe"]

log = logging.getLogger("azdo_gateway.tokens")

MAX_WORKERS = 4  # MSAL calls in flight at once (each blocks a thread on HTTP)
OBO_USERS_PER_CREDENTIAL = 10_000
HITS_FLUSH_S = 1.0
_OboKey = tuple[str, ...]


class TokenBroker:
    def __init__(
        self,
        config: Config,
        *,
        metrics: TokenMetrics | None = None,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.time,
        obo_users: int = OBO_USERS_PER_CREDENTIAL,
    ) -> None:
        gw = config.gateway
        self.config = config
        self.metrics: TokenMetrics = metrics or NoMetrics()
        # Cache hits are counted here and handed to `metrics` every HITS_FLUSH_S: a
        # Prometheus increment costs about a microsecond, a dict increment a tenth.
        self._hits: dict[str, int] = {}
        self._hits_timer: asyncio.TimerHandle | None = None
        self.policy = policy or RefreshPolicy(refresh_ahead_s=gw.identity.refresh_ahead_s)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._providers: dict[str, CredentialProvider] = {}
        self._pat: dict[str, UpstreamToken] = {}
        self._pat_errors: dict[str, TokenAcquisitionError] = {}
        self._slots: dict[str, TokenSlot] = {}
        self._obo: dict[str, LRUCache[_OboKey, TokenSlot]] = {}
        self._obo_scopes: dict[str, tuple[str, ...]] = {}
        self._used = {c.credential for c in config.clients}
        self.shared: SharedTokens | None = None  # state.backend: redis
        self._fingerprints: dict[str, str] = {}
        for name, cred in gw.credentials.items():
            self._fingerprints[name] = fingerprint(cred, gw.identity)
            if isinstance(cred, PatCredential):
                try:
                    self._pat[name] = UpstreamToken(pat_header(cred), name)
                except TokenAcquisitionError as err:
                    self._pat_errors[name] = err
                continue
            provider = provider_for(name, cred, gw.identity, gw.upstream)
            self._providers[name] = provider
            if isinstance(cred, OnBehalfOfCredential):
                self._obo[name] = LRUCache(maxsize=obo_users)
            else:
                scopes = (AZURE_DEVOPS_DEFAULT_SCOPE,)
                self._slots[name] = TokenSlot(
                    name, self._fetcher(provider, scopes, ()), self.policy, self, clock=clock
                )
        for client in config.clients:
            if client.credential in self._obo:
                self._obo_scopes[client.name] = delegated_scopes(client.scopes)

    # --- lifecycle ---------------------------------------------------------------

    def share(self, store: RedisStore | None) -> None:
        """Acquire through `store` (one acquisition per credential for the fleet).
        Call before `start()`."""
        self.shared = None if store is None else SharedTokens(store, self.policy)

    async def start(self) -> None:
        """Start acquiring the tokens of every credential a client uses (in the background)."""
        self._pool()
        self._hits_timer = asyncio.get_running_loop().call_later(HITS_FLUSH_S, self._flush_tick)
        for name, err in self._pat_errors.items():
            log.error("credential %s: %s", name, err.message)
        for name, slot in self._slots.items():
            if name in self._used:
                slot.start()

    def adopt(self, previous: TokenBroker) -> None:
        """Take over the metrics sink and the cached tokens of the broker this one
        replaces (a reload), for every credential whose configuration is unchanged,
        so that a reload costs no token acquisition. Call before `start()`."""
        self.metrics = previous.metrics
        if previous.shared is not None:
            self.share(previous.shared.store)
        same = self.config.gateway.identity == previous.config.gateway.identity
        old_creds = previous.config.gateway.credentials
        for name, cred in self.config.gateway.credentials.items():
            if not same or old_creds.get(name) != cred:
                continue
            slot, old = self._slots.get(name), previous._slots.get(name)
            if slot is not None and old is not None:
                slot.inherit(old)
            users, old_users = self._obo.get(name), previous._obo.get(name)
            if users is not None and old_users is not None:
                provider = self._providers[name]
                for key, old_slot in list(old_users.items())[-int(users.maxsize) :]:
                    new = self._user_slot(name, provider, key)
                    new.inherit(old_slot)
                    users[key] = new

    async def close(self) -> None:
        if self._hits_timer is not None:
            self._hits_timer.cancel()
            self._hits_timer = None
        self.flush_metrics()
        for slot in self._slots.values():
            slot.close()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        # A provider's close() waits (a bounded time) for acquisitions in flight, whose
        # connections still need its CA bundle: never block the event loop on that (a
        # reload retires the old broker while requests are being served).
        for provider in self._providers.values():
            await asyncio.to_thread(provider.close)

    def ready(self) -> tuple[bool, str]:
        """Ready once every credential a client uses has produced a token (PAT: is readable).
        On-behalf-of credentials need a caller, so they do not hold readiness back."""
        waiting = []
        for name in sorted(self._used):
            if name in self._pat or name in self._obo:
                continue
            slot = self._slots.get(name)
            if name in self._pat_errors:
                waiting.append(f"{name} ({self._pat_errors[name].reason})")
            elif slot is None:
                waiting.append(f"{name} (not configured)")
            elif slot.acquired == 0:
                err = slot.last_error
                waiting.append(f"{name} ({err.reason if err else 'acquiring'})")
        if waiting:
            return False, "no upstream token yet for: " + ", ".join(waiting)
        return True, "ok"

    async def warm_up(self, within_s: float = 30.0) -> tuple[bool, str]:
        """Wait (up to `within_s`) until every used credential has had a first token
        (retries go on in the background meanwhile); return `ready()`."""
        waits = [s.first_token() for n, s in self._slots.items() if n in self._used]
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), within_s)
            except TimeoutError:
                pass
        return self.ready()

    # --- the request path ----------------------------------------------------------

    async def acquire(self, identity: ClientIdentity, client: Client) -> UpstreamToken:
        name = client.credential
        slot = self._slots.get(name)
        if slot is not None:
            token = slot.peek(self._clock())
            if token is not None:
                self._hits[name] = self._hits.get(name, 0) + 1
                return token
            return await slot.get()
        pat = self._pat.get(name)
        if pat is not None:
            return pat
        users = self._obo.get(name)
        if users is not None:
            return await self._on_behalf_of(name, users, identity, client)
        err = self._pat_errors.get(name)
        raise CredentialUnavailable(
            f"upstream credential {name!r} is "
            + (f"unusable ({err.reason})" if err else "not configured"),
            retry_after=60,
        )

    async def _on_behalf_of(
        self,
        name: str,
        users: LRUCache[_OboKey, TokenSlot],
        identity: ClientIdentity,
        client: Client,
    ) -> UpstreamToken:
        if not identity.user_assertion or not identity.object_id:
            raise Unauthenticated(
                f"client {client.name!r} reaches Azure DevOps on behalf of its user: "
                "authenticate with an Entra ID access token",
            )
        scopes = self._obo_scopes.get(client.name) or delegated_scopes(client.scopes)
        # SECURITY: the key is the validated token's tenant and user; a slot only ever
        # holds that user's token, so no user is ever served another one's.
        key = (identity.tenant_id or "", identity.object_id, " ".join(scopes))
        slot = users.get(key)
        if slot is None:
            slot = users[key] = self._user_slot(name, self._providers[name], key)
        slot.user_assertion = identity.user_assertion
        token = slot.peek(self._clock())
        if token is not None:
            self._hits[name] = self._hits.get(name, 0) + 1
            return token
        return await slot.get()

    def invalidate(self, token: UpstreamToken) -> None:
        """Upstream rejected `token` (401/203): drop it so the next acquire gets a new one."""
        slot = self._slots.get(token.credential)
        if slot is None:
            users = self._obo.get(token.credential)
            slot = users.get(token.key) if users is not None else None
        if slot is not None and slot.invalidate(token) and self.shared is not None:
            name = self._shared_name(token.credential, token.key)
            self.shared.reject(name, token.header_value.removeprefix("Bearer "))

    # --- plumbing ----------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="azdo-gw-token")
        return self._executor

    def _user_slot(self, name: str, provider: CredentialProvider, key: _OboKey) -> TokenSlot:
        scopes = tuple(key[2].split(" "))
        fetch = self._fetcher(provider, scopes, key)
        return TokenSlot(
            name, fetch, self.policy, self, key=key, proactive=False, clock=self._clock
        )

    def _fetcher(
        self, provider: CredentialProvider, scopes: tuple[str, ...], key: _OboKey
    ) -> Fetch:
        async def fetch(user_assertion: str | None) -> IssuedToken:
            async def acquire() -> IssuedToken:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._pool(), provider.acquire, scopes, user_assertion
                )

            shared = self.shared
            if shared is None:
                return await acquire()
            return await shared.fetch(self._shared_name(provider.name, key), acquire)

        return fetch

    def _shared_name(self, credential: str, key: tuple[str, ...]) -> str:
        assert self.shared is not None
        return self.shared.name(credential, self._fingerprints.get(credential, ""), *key)

    def flush_metrics(self) -> None:
        """Hand the cache hits counted since the last flush to `metrics`."""
        hits, self._hits = self._hits, {}
        counter = getattr(self.metrics, "token_cache_hits", None)  # prometheus Counter
        label = getattr(self.metrics, "credential", None)
        for name, n in hits.items():
            if counter is not None and label is not None:
                counter.labels(label(name)).inc(n)
            else:
                for _ in range(n):
                    self.metrics.token_cache_hit(name)

    def _flush_tick(self) -> None:
        self.flush_metrics()
        self._hits_timer = asyncio.get_running_loop().call_later(HITS_FLUSH_S, self._flush_tick)

    # TokenMetrics, forwarded to whatever `metrics` is now (set after construction too).
    def token_acquired(self, credential: str, result: str) -> None:
        self.metrics.token_acquired(credential, result)

    def token_cache_hit(self, credential: str) -> None:
        self.metrics.token_cache_hit(credential)

    def token_expiry(self, credential: str, expires_at: float | None) -> None:
        self.metrics.token_expiry(credential, expires_at)


def fingerprint(cred: object, identity: object) -> str:
    """What makes a credential's tokens what they are (its whole configuration,
    secrets included, and the identity provider): the store keeps this only as
    an HMAC in a key name."""

    def plain(value: object) -> object:
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    dump = getattr(cred, "model_dump", None)
    ident = getattr(identity, "model_dump", None)
    data = {"credential": dump() if dump else None, "identity": ident() if ident else None}
    return orjson.dumps(data, default=plain, option=orjson.OPT_SORT_KEYS).decode()
