"""Entra ID access tokens: validate a JWT from the configured tenant and map it to a client.

Takes a JWT-shaped credential (Bearer, or the password of Basic as git sends
it) and returns the `ClientIdentity` of the client whose `entra` block names
the token's `oid` (`object_ids`), its `appid`/`azp` (`app_ids`) or one of its
`groups`, checked in that order over the clients in configuration order. The
validated token is kept in `user_assertion` for on-behalf-of exchange; the
subject is the `oid` (or the app id for app-only tokens without one).

Validation, with PyJWT: the signature against the tenant's JWKS (found by
OpenID discovery at `identity.authority_host`/`identity.tenant_id`, fetched
with aiohttp trusting `identity.ca_file`, cached, refetched in the background every
`max_key_age_s` and when a token names an unknown `kid`: a burst of
`refresh_burst` such refetches, then one per `refresh_min_interval_s`, and a
kid still unknown after a refetch does not cause another for that interval);
`alg` in RS256/RS384/RS512/PS256 only; `iss` in its v1
(`https://sts.windows.net/{tid}/`) or v2 (`{authority}/{tid}/v2.0`) form;
`aud` in `identity.audiences`; `exp` and `nbf` with `LEEWAY_S` of clock skew.
Raises Unauthenticated (`invalid_token`, `token_expired`) for a bad token,
Denied (`unknown_client`) for a good one that maps to no client, and
CredentialUnavailable (503) when the signing keys cannot be fetched.

Validated tokens are cached until they expire (bounded; see TokenCache), so
each token is verified once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cachetools import TTLCache

from gateway.authn.base import Presented
from gateway.config.model import Config
from gateway.errors import CredentialUnavailable, Denied, Unauthenticated
from gateway.tasks import spawn
from gateway.types import ClientIdentity

log = logging.getLogger("azdo_gateway.authn")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256")
LEEWAY_S = 60
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_DOCUMENT_BYTES = 1 << 20


class TokenCache:
    """Validated tokens until they expire; at most `maxsize` of them.

    Indexed by the token's signature segment, and a hit must be the very same
    token (constant-time comparison), so a forged header or payload next to a
    known signature is a miss. A hit costs a lookup, a comparison and a clock
    read, with no hashing of the whole token. When full, expired entries go
    first, then the oldest ones.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: dict[str, tuple[str, ClientIdentity, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> ClientIdentity | None:
        signature = token[token.rfind(".") + 1 :]
        entry = self._entries.get(signature)
        if entry is None or not hmac.compare_digest(entry[0], token):
            return None
        if entry[2] <= time.time():
            self._entries.pop(signature, None)
            return None
        return entry[1]

    def put(self, token: str, identity: ClientIdentity, expires_at: float) -> None:
        signature = token[token.rfind(".") + 1 :]
        if not signature:
            return
        if len(self._entries) >= self.maxsize:
            now = time.time()
            self._entries = {k: v for k, v in self._entries.items() if v[2] > now}
            while len(self._entries) >= self.maxsize:
                del self._entries[next(iter(self._entries))]
        self._entries[signature] = (token, identity, expires_at)


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What OpenID discovery and the JWKS say about the tenant."""

    keys: Mapping[str, Any]  # kid -> public key
    issuers: frozenset[str]
    tenant_guid: str | None


def _invalid(message: str, reason: str = "invalid_token") -> Unauthenticated:
    return Unauthenticated(f"Entra ID token rejected: {message}", reason=reason)


class EntraAuthenticator:
    refresh_burst = 3  # unknown kids: refetches allowed at once ...
    refresh_min_interval_s = 30.0  # ... then one per this interval
    max_key_age_s = 24 * 3600.0  # refetch the JWKS at least this often
    fetch_timeout_s = 10.0

    def __init__(self, config: Config) -> None:
        ident = config.gateway.identity
        self.authority = ident.authority_host.rstrip("/")
        self.tenant = ident.tenant_id
        self.audiences = tuple(ident.audiences)
        self.ca_file = ident.ca_file
        self.enabled = bool(self.tenant and self.audiences)
        self._by_oid: dict[str, str] = {}
        self._by_app: dict[str, str] = {}
        self._by_group: dict[str, str] = {}
        for client in config.clients:
            if client.entra is None:
                continue
            for table, ids in (
                (self._by_oid, client.entra.object_ids),
                (self._by_app, client.entra.app_ids),
                (self._by_group, client.entra.groups),
            ):
                for value in ids:
                    table.setdefault(value.lower(), client.name)
        self._signing: SigningKeys | None = None
        self._loaded_at = 0.0
        self._last_fetch = float("-inf")
        self._bucket = float(self.refresh_burst)
        self._bucket_at = time.monotonic()
        self._missing: TTLCache[str, bool] = TTLCache(maxsize=1024, ttl=self.refresh_min_interval_s)
        self._generation = 0
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._background: asyncio.Task[None] | None = None
        self._cache = TokenCache(maxsize=10_000)

    # --- the request path ------------------------------------------------

    async def authenticate(
        self, request: Any, presented: Presented | None
    ) -> ClientIdentity | None:
        if presented is None or not presented.is_jwt:
            return None
        return await self.verify(presented.secret)

    async def verify(self, token: str) -> ClientIdentity:
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        if not self.enabled:
            raise _invalid(
                "this gateway does not accept Entra ID tokens"
                " (identity.tenant_id and identity.audiences are not configured)"
            )
        header = _header(token)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
            raise _invalid(
                f"algorithm {shown!r} is not allowed (use one of {', '.join(ALGORITHMS)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("the token names no signing key (kid)")
        signing = await self._signing_keys(kid)
        key = signing.keys.get(kid)
        if key is None:
            raise _invalid("signed with a key the tenant does not publish")
        claims = self._decode(token, key, signing)
        identity = self.identify(claims, token)
        self._cache.put(token, identity, float(claims["exp"]))
        return identity

    def _decode(self, token: str, key: Any, signing: SigningKeys) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=list(self.audiences),
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("expired", reason="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise _invalid(
                f"audience not accepted (expected one of {', '.join(self.audiences)})"
            ) from None
        except jwt.InvalidSignatureError:
            raise _invalid("bad signature") from None
        except jwt.MissingRequiredClaimError as err:
            raise _invalid(f"missing the {err.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _invalid("malformed or invalid") from None
        if claims.get("iss") not in signing.issuers:
            raise _invalid("issued by another tenant or authority")
        tid = claims.get("tid")
        if signing.tenant_guid and tid is not None and str(tid).lower() != signing.tenant_guid:
            raise _invalid("issued by another tenant")
        return claims

    def identify(self, claims: Mapping[str, Any], token: str = "") -> ClientIdentity:
        """The client a validated token's claims map to (by oid, then appid, then groups);
        raises Denied `unknown_client` when none."""
        oid = _str(claims.get("oid"))
        app = _str(claims.get("appid")) or _str(claims.get("azp"))
        client = None
        if oid:
            client = self._by_oid.get(oid.lower())
        if client is None and app:
            client = self._by_app.get(app.lower())
        if client is None:
            groups = claims.get("groups")
            if isinstance(groups, list):
                for group in groups:
                    client = self._by_group.get(str(group).lower())
                    if client is not None:
                        break
        subject = oid or app or "unknown"
        if client is None:
            raise Denied(
                f"valid Entra ID token (oid {oid or '-'}, app {app or '-'}) belongs to no client",
                reason="unknown_client",
            )
        return ClientIdentity(
            client=client,
            auth_method="entra",
            subject=subject,
            tenant_id=_str(claims.get("tid")),
            object_id=oid,
            user_assertion=token,
        )

    # --- signing keys ------------------------------------------------------

    async def _signing_keys(self, kid: str) -> SigningKeys:
        now = time.monotonic()
        fetched = False
        if self._signing is None:
            await self._refresh(self._generation, must=True)
            fetched = True
        elif (
            now - self._loaded_at > self.max_key_age_s
            and now - self._last_fetch >= self.refresh_min_interval_s
            and self._background is None
        ):  # routine refetch: in the background, requests go on with the keys at hand
            self._background = spawn(self._refresh_in_background(), name="entra-keys-refresh")
        signing = self._signing
        assert signing is not None
        if kid not in signing.keys and kid not in self._missing:
            if not fetched and self._may_refetch(now):
                await self._refresh(self._generation, must=False)
                signing, fetched = self._signing, True
                assert signing is not None
            if fetched and kid not in signing.keys:
                self._missing[kid] = True  # no other refetch for this kid for a while
        return signing

    async def _refresh_in_background(self) -> None:
        try:
            await self._refresh(self._generation, must=False)
        finally:
            self._background = None

    def _may_refetch(self, now: float) -> bool:
        """Token bucket: `refresh_burst` refetches, refilled one per interval."""
        if self.refresh_min_interval_s <= 0:
            return True
        refill = (now - self._bucket_at) / self.refresh_min_interval_s
        self._bucket = min(float(self.refresh_burst), self._bucket + refill)
        self._bucket_at = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    async def _refresh(self, seen_generation: int, *, must: bool) -> None:
        """Fetch discovery + JWKS once, however many requests ask at the same time."""
        async with self._lock:
            if self._generation != seen_generation:
                return  # another request refreshed while this one waited
            self._last_fetch = time.monotonic()
            try:
                signing = await self._fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError, ssl.SSLError) as err:
                log.warning("cannot fetch Entra ID signing keys: %s", err)
                if must or self._signing is None:
                    raise CredentialUnavailable(
                        "cannot fetch the identity provider's signing keys to validate the token"
                    ) from None
                return
            self._signing = signing
            self._loaded_at = self._last_fetch
            self._generation += 1
            log.info("loaded %d Entra ID signing keys", len(signing.keys))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ctx = ssl.create_default_context()
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=4),
                timeout=aiohttp.ClientTimeout(total=self.fetch_timeout_s),
                trust_env=True,
            )
        return self._session

    async def _json(self, url: str) -> dict[str, Any]:
        async with self._client().get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise ValueError(f"{url}: HTTP {resp.status}")
            body = await resp.content.read(_MAX_DOCUMENT_BYTES + 1)
            if len(body) > _MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url}: document too large")
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError(f"{url}: not a JSON object")
            return doc

    async def _fetch(self) -> SigningKeys:
        base = f"{self.authority}/{self.tenant}"
        v2 = await self._json(f"{base}/v2.0/.well-known/openid-configuration")
        jwks_uri, issuer = v2.get("jwks_uri"), v2.get("issuer")
        if not isinstance(jwks_uri, str) or not isinstance(issuer, str):
            raise ValueError("OpenID configuration lacks jwks_uri or issuer")
        found = _GUID.search(issuer)
        guid = found.group(0).lower() if found else None
        tid = guid or str(self.tenant)
        issuers = {issuer, f"{self.authority}/{tid}/v2.0", f"https://sts.windows.net/{tid}/"}
        try:  # the v1 document names the v1 issuer of this cloud
            v1 = await self._json(f"{base}/.well-known/openid-configuration")
            if isinstance(v1.get("issuer"), str):
                issuers.add(v1["issuer"])
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        jwks = await self._json(jwks_uri)
        keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", []) if isinstance(jwks.get("keys"), list) else []:
            if (
                not isinstance(jwk, dict)
                or jwk.get("kty") != "RSA"
                or jwk.get("use", "sig") != "sig"
            ):
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk).key
            except (KeyError, jwt.PyJWTError):
                continue
        if not keys:
            raise ValueError(f"{jwks_uri}: no usable RSA signing keys")
        return SigningKeys(keys, frozenset(issuers), guid)

    def adopt(self, previous: EntraAuthenticator) -> None:
        """Reuse the signing keys of the authenticator this one replaces, if it
        trusted the same authority, tenant and CA."""
        same = (self.authority, self.tenant, self.ca_file) == (
            previous.authority,
            previous.tenant,
            previous.ca_file,
        )
        if same and previous._signing is not None:
            self._signing = previous._signing
            self._loaded_at = previous._loaded_at
            self._last_fetch = previous._last_fetch
            self._bucket, self._bucket_at = previous._bucket, previous._bucket_at
            self._generation = previous._generation

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        if self._session is not None:
            await self._session.close()
            self._session = None


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read without verifying (PyJWT verifies the whole token next).

    Parsing only the header segment keeps a first-seen token to one pass of PyJWT
    over the token instead of two.
    """
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise _invalid("not a well-formed JWT") from None
    if not isinstance(header, dict):
        raise _invalid("not a well-formed JWT")
    return header


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
