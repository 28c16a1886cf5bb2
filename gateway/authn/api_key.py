"""Gateway keys: the secret legacy tools send where they used to send a PAT.

Takes the presented secret (Basic password or Bearer value) and returns the
`ClientIdentity` of the client whose `api_keys` hold its SHA-256, with the
key's `id` as subject. Rejects with 401 an unknown key (`unknown_key`), an
expired one (`key_expired`) and an Azure DevOps PAT (`pat_not_accepted`: a PAT
is recognised by its format, refused, never forwarded, never logged).

A key is `azgw_` + 43 base62 characters (256 random bits) + 6 base62
characters of CRC-32 checksum, so secret scanners can find leaked keys and
tell them from random strings. Only the SHA-256 of a key is configured; the
hot path is one hash, one dict lookup and one `hmac.compare_digest`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
import zlib
from dataclasses import dataclass

from aiohttp import web

from gateway.authn.base import Presented
from gateway.config.model import ApiKey, Config
from gateway.errors import Unauthenticated
from gateway.types import ClientIdentity

log = logging.getLogger("azdo_gateway.authn")

KEY_PREFIX = "azgw_"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_SHAPE = re.compile(r"azgw_[0-9A-Za-z]{49}\Z")

# Azure DevOps PATs: the legacy form is 52 lowercase base32 characters; the
# current form is 84 base64 characters carrying the fixed signature "JQQJ" at
# offset 52 and the Azure DevOps provider signature "AZDO" at offset 76.
_LEGACY_PAT = re.compile(r"[a-z2-7]{52}\Z")
_PAT = re.compile(r"[A-Za-z0-9+/]{52}JQQJ[A-Za-z0-9+/]{20}AZDO[A-Za-z0-9+/]{4}\Z")


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


def new_key() -> str:
    """A fresh gateway key: prefix, 256 random bits, checksum."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), 43)
    return KEY_PREFIX + body + _base62(zlib.crc32(body.encode()), 6)


def is_gateway_key(secret: str) -> bool:
    """Has the shape and a valid checksum of a key made by `new_key`."""
    if not _KEY_SHAPE.match(secret):
        return False
    body, check = secret[5:48], secret[48:]
    return _base62(zlib.crc32(body.encode()), 6) == check


def key_sha256(secret: str) -> str:
    """What the policy stores: hex SHA-256 of the key string exactly as sent."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_pat(secret: str) -> bool:
    """An Azure DevOps personal access token, legacy or current format."""
    n = len(secret)
    if n == 52:
        return _LEGACY_PAT.match(secret) is not None
    return n == 84 and _PAT.match(secret) is not None


def expiry_epoch(expires: dt.date | dt.datetime | None) -> float | None:
    """A date means the key works through that day (UTC); a naive datetime is UTC."""
    if expires is None:
        return None
    if isinstance(expires, dt.datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return expires.timestamp()
    end = dt.datetime.combine(expires + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end.timestamp()


@dataclass(frozen=True, slots=True)
class _Entry:
    sha256: str
    identity: ClientIdentity
    expires_at: float | None


PAT_MESSAGE = (
    "Azure DevOps personal access tokens are not accepted by this gateway and were not"
    " forwarded: use the gateway key (azgw_...) your platform team issued for this tool"
    " where you used the PAT"
)


class ApiKeyAuthenticator:
    """Gateway keys from every client's `api_keys`."""

    def __init__(self, config: Config) -> None:
        self._by_sha: dict[str, _Entry] = {}
        for client in config.clients:
            for key in client.api_keys:
                self._add(client.name, key)

    def _add(self, client: str, key: ApiKey) -> None:
        digest = key.sha256.lower()
        if digest in self._by_sha:
            other = self._by_sha[digest].identity
            log.warning(
                "api key %s of client %s has the same sha256 as key %s of client %s;"
                " the first one wins",
                key.id,
                client,
                other.subject,
                other.client,
            )
            return
        identity = ClientIdentity(client=client, auth_method="api_key", subject=key.id)
        self._by_sha[digest] = _Entry(digest, identity, expiry_epoch(key.expires))

    def __len__(self) -> int:
        return len(self._by_sha)

    def verify(self, secret: str) -> ClientIdentity:
        """The identity of a key; raises Unauthenticated for anything else."""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        entry = self._by_sha.get(digest)
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            if looks_like_pat(secret):
                raise Unauthenticated(PAT_MESSAGE, reason="pat_not_accepted")
            raise Unauthenticated("unknown gateway key", reason="unknown_key")
        if entry.expires_at is not None and time.time() >= entry.expires_at:
            raise Unauthenticated(
                f"gateway key {entry.identity.subject} has expired: ask for a new one",
                reason="key_expired",
            )
        return entry.identity

    async def authenticate(
        self, request: web.BaseRequest, presented: Presented | None
    ) -> ClientIdentity | None:
        if presented is None or presented.is_jwt:
            return None
        return self.verify(presented.secret)

    async def close(self) -> None:
        return None
