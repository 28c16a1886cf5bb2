"""What every authenticator shares: the credential a request presents, and the protocol.

`presented_credential(headers)` takes the request headers and returns the
credential from `Authorization` (`Presented`), or None when there is none.
It accepts the ways tools send a PAT today: HTTP Basic with any user name and
the secret as password, Basic with an empty user name, Basic with the secret
as user name and an empty password, and `Bearer SECRET`. It rejects, with 401
`malformed_authorization`, several `Authorization` headers, an oversized or
non-ASCII value, bad base64, a Basic value that is not UTF-8 or has no `:`,
and a Bearer value that is not a token68.

An `Authenticator` returns the `ClientIdentity` a credential proves, None when
the credential is not of its kind, and raises Unauthenticated (401) or
Denied (403) when it is of its kind but not good.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.errors import Unauthenticated
from gateway.types import ClientIdentity

# Entra ID tokens with many group claims reach ~10 KB; nothing legitimate is larger.
MAX_AUTHORIZATION_BYTES = 16 * 1024

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
# A JOSE header always starts with '{"', which is "eyJ" in base64url.
_BASE64URL_AND_DOT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@dataclass(frozen=True, slots=True)
class Presented:
    """The secret a request carries in `Authorization`. Never logged."""

    scheme: Literal["basic", "bearer"]
    secret: str = field(repr=False)
    # Shaped like a JWT (three base64url parts): an Entra ID token, not a gateway key.
    is_jwt: bool = False

    @classmethod
    def of(cls, scheme: Literal["basic", "bearer"], secret: str) -> Presented:
        return cls(scheme, secret, looks_like_jwt(secret))


def looks_like_jwt(secret: str) -> bool:
    """header.payload.signature in base64url (the signature may be empty)."""
    if not secret.startswith("eyJ") or secret.encode().translate(None, _BASE64URL_AND_DOT):
        return False
    payload, dot, signature = secret.partition(".")[2].partition(".")
    return bool(payload and dot) and "." not in signature


def _malformed(why: str) -> Unauthenticated:
    return Unauthenticated(
        f"malformed Authorization header: {why}", reason="malformed_authorization"
    )


def presented_credential(
    headers: CIMultiDictProxy[str] | Mapping[str, str], *, max_bytes: int = MAX_AUTHORIZATION_BYTES
) -> Presented | None:
    """The credential in `Authorization`, or None if the request carries none."""
    if isinstance(headers, CIMultiDictProxy):
        values = headers.getall("Authorization", [])
    else:
        one = headers.get("Authorization")
        values = [] if one is None else [one]
    if not values:
        return None
    if len(values) > 1:
        raise _malformed("send exactly one Authorization header")
    value = values[0]
    if len(value) > max_bytes:
        raise _malformed(f"longer than {max_bytes} bytes")
    if not value.isascii():
        raise _malformed("not ASCII")
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        return _basic(rest)
    if scheme == "bearer":
        if not rest:
            return None
        if looks_like_jwt(rest):
            return Presented("bearer", rest, True)
        if not _TOKEN68.match(rest):
            raise _malformed("a Bearer credential is one token of base64url characters")
        return Presented("bearer", rest, False)
    raise Unauthenticated(
        "unsupported Authorization scheme: send a gateway key with Basic or Bearer,"
        " or an Entra ID access token with Bearer",
        reason="unauthenticated",
    )


def _basic(encoded: str) -> Presented | None:
    if not encoded:
        return None
    try:
        raw = binascii.a2b_base64(encoded, strict_mode=True)  # = b64decode(validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("the Basic credential is not valid base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("the Basic credential is not UTF-8") from None
    user, colon, password = text.partition(":")
    if not colon:
        raise _malformed("the Basic credential has no ':' between user name and password")
    secret = password or user  # `curl -u KEY:` puts the key in the user name
    if not secret:
        return None
    return Presented.of("basic", secret)


class Authenticator(Protocol):
    """One way of proving who the client is."""

    async def authenticate(
        self, request: web.BaseRequest, presented: Presented | None
    ) -> ClientIdentity | None:
        """The identity proven, None if the credential is not of this kind.

        Raises Unauthenticated (bad credential of this kind) or Denied (a good
        credential that belongs to no client).
        """
        ...

    async def close(self) -> None: ...
