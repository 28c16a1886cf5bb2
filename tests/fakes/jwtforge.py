"""Forged JWTs, for tests that prove token validation refuses them.

What no identity provider issues and the demo never needs: a token with no
signature (`alg: none`), one "signed" with HS256 keyed by the provider's public
key PEM (the classic algorithm-confusion attack on a verifier that trusts the
token's `alg`), and one signed with a key nobody publishes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.demo.jwtmint import SigningKeys

_unpublished: dict[str, rsa.RSAPrivateKey] = {}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unpublished_key(kid: str) -> rsa.RSAPrivateKey:
    """A key for `kid` that no JWKS contains (the same one for the same kid)."""
    if kid not in _unpublished:
        _unpublished[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _unpublished[kid]


def forge(
    keys: SigningKeys,
    payload: Mapping[str, Any],
    *,
    alg: str = "RS256",
    kid: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """`payload` as a token `keys` never signed: `alg` "none" or "HS256" (keyed with the
    public key PEM of `kid`, default the current key), or an RS256 signature by an
    unpublished key when `kid` is not one of `keys.kids`."""
    kid = kid or keys.current
    header: dict[str, Any] = {"typ": "JWT", "alg": alg, "kid": kid, **(headers or {})}
    if alg == "RS256":
        if kid in keys.kids:
            raise ValueError(f"kid {kid!r} is published: that token is not forged")
        extra = {k: v for k, v in header.items() if k != "alg"}
        return jwt.encode(dict(payload), unpublished_key(kid), algorithm="RS256", headers=extra)
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(dict(payload), separators=(",", ":")).encode())
    )
    if alg == "none":
        return signing_input + "."
    if alg == "HS256":
        key = keys.private_key(kid) if kid in keys.kids else unpublished_key(kid)
        mac = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url(mac)
    raise ValueError(f"cannot forge alg {alg!r}")
