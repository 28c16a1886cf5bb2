"""Upstream tokens shared by the fleet (`state.backend: redis`): one acquisition
per credential (per user for on-behalf-of) per token lifetime.

`SharedTokens.fetch(name, acquire)` is what a `TokenSlot` calls when it needs
a token. It returns the fleet's stored token while that one is not due for
refresh; otherwise it takes the credential's lock (SET NX PX with a random
holder token; released only by its holder, atomically) and the holder
acquires from the identity provider and stores the result, while every other
process waits (up to `wait_s`) for the stored token to appear. So a cold fleet
makes one token request per credential, start-up prefetch included, and so
does each refresh.

Stored values are sealed (AES-GCM, bound to the key name; see
gateway.state.crypto): the store never holds a token in any readable form. Key
names carry the credential's name and an HMAC of its configuration (a changed
client id or secret never reads a token issued for the old one), and for
on-behalf-of an HMAC of the tenant, user object id and scopes: never the user
or the caller's assertion.

The store unavailable (down, frozen, slow): the slot acquires itself, as with
`backend: memory`; a waiter whose holder never stores a token does the same
once `wait_s` is over. A token upstream rejected is never read back: the
process that saw the 401 acquires a new one and replaces it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson

from gateway.state import RedisStore, StateUnavailable
from gateway.tokens.base import IssuedToken
from gateway.tokens.cache import RefreshPolicy

log = logging.getLogger("azdo_gateway.tokens")

POLL_FIRST_S = 0.02
POLL_CAP_S = 0.25
GIVE_UP_S = 1.0  # a waiter acquires itself once the store has failed it this long


def _digest(access_token: str) -> str:
    return hashlib.sha256(access_token.encode()).hexdigest()


class SharedTokens:
    def __init__(
        self,
        store: RedisStore,
        policy: RefreshPolicy,
        *,
        wait_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.wait_s = wait_s if wait_s is not None else min(policy.wait_s, 10.0)
        self._clock = clock
        self._rejected: dict[str, str] = {}  # name -> digest of the token upstream rejected

    def name(self, credential: str, fingerprint: str, *user: str) -> str:
        """The key name of a credential's token (of one user's, for on-behalf-of)."""
        name = f"tok:{credential}:{self.store.sealer.name('credential', fingerprint)}"
        if user:
            name += ":" + self.store.sealer.name("user", *user)
        return name

    def reject(self, name: str, access_token: str) -> None:
        """Upstream rejected this token: do not take it from the store again."""
        self._rejected[name] = _digest(access_token)

    async def fetch(self, name: str, acquire: Callable[[], Awaitable[IssuedToken]]) -> IssuedToken:
        store = self.store
        if not store.tokens_available:
            log.debug("token %s: state backend unavailable, acquiring here", name)
            return await acquire()
        try:
            token = await self._read(name)
            if token is not None:
                return token
            holder = await store.lock(name, self.wait_s)
        except StateUnavailable as err:
            log.debug("token %s: state backend unavailable (%s), acquiring here", name, err)
            return await acquire()
        if holder is None:
            waited = await self._wait(name)
            if isinstance(waited, IssuedToken):
                return waited
            if waited is None:
                log.debug("token %s: the wait for another process's token ended", name)
                return await acquire()
            holder = waited
        return await self._acquire_holding(name, holder, acquire)

    async def _acquire_holding(
        self, name: str, holder: str, acquire: Callable[[], Awaitable[IssuedToken]]
    ) -> IssuedToken:
        try:
            try:
                token = await self._read(name)  # stored between our read and our lock
            except StateUnavailable:
                token = None
            if token is not None:
                return token
            log.debug("token %s: acquiring for the fleet", name)
            issued = await acquire()
            await self._write(name, issued)
            return issued
        finally:
            try:
                await self.store.unlock(name, holder)
            except StateUnavailable:
                pass  # the lock ends on its own (PX)

    async def _wait(self, name: str) -> IssuedToken | str | None:
        """Another process holds the lock: its token, once stored; or the lock
        itself (its holder token), when the holder gave up without storing one;
        None: the wait is over, or the store is unavailable."""
        deadline = time.monotonic() + self.wait_s
        pause = POLL_FIRST_S
        unavailable_since: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(POLL_CAP_S, pause * 2)
            try:
                token = await self._read(name)
                if token is not None:
                    return token
                if not await self.store.locked(name):
                    # the holder gave up without storing (its acquisition failed): take
                    # the lock ourselves, or keep waiting for whoever did
                    holder = await self.store.lock(name, self.wait_s)
                    if holder is not None:
                        return holder
            except StateUnavailable:
                # a moment's trouble should not cost a token request; an outage should
                # not hold the request for the whole wait
                now = time.monotonic()
                unavailable_since = unavailable_since or now
                if now - unavailable_since >= GIVE_UP_S:
                    return None
                continue
            unavailable_since = None
        return None

    async def _read(self, name: str) -> IssuedToken | None:
        data = await self.store.get_sealed(name)
        if data is None:
            return None
        try:
            fields = orjson.loads(data)
            token = IssuedToken(
                access_token=str(fields["t"]),
                expires_at=float(fields["e"]),
                acquired_at=float(fields["a"]),
                refresh_in=None if fields.get("r") is None else float(fields["r"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if self._clock() >= self.policy.refresh_at(token):
            return None  # due: whoever gets the lock refreshes it
        if self._rejected.get(name) == _digest(token.access_token):
            return None
        return token

    async def _write(self, name: str, token: IssuedToken) -> None:
        ttl = token.expires_at - self._clock()
        if ttl <= 1:
            return
        data = orjson.dumps(
            {"t": token.access_token, "e": token.expires_at, "a": token.acquired_at,
             "r": token.refresh_in}
        )  # fmt: skip
        try:
            await self.store.put_sealed(name, data, ttl)
        except StateUnavailable:
            log.info("state backend unavailable: a token is kept in this process only")
