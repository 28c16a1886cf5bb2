"""Signing keys and JWT minting for the demo Entra ID stand-in.

`SigningKeys` holds the RSA keys the stand-in publishes in its JWKS (with
rotation) and signs JWTs with any of them, with a key it never publishes
(`kid` unknown to it), or deliberately badly (`alg="none"`, or `alg="HS256"`
keyed with the public key PEM: the classic algorithm-confusion attack), so
that tests of token validation can prove each of those is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class SigningKeys:
    """Published signing keys (newest first is current) plus unpublished ones."""

    def __init__(self) -> None:
        self._published: dict[str, rsa.RSAPrivateKey] = {}
        self._unpublished: dict[str, rsa.RSAPrivateKey] = {}
        self.current = self.rotate()

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on; older keys stay published."""
        kid = b64url(secrets.token_bytes(15))
        self._published[kid] = new_rsa_key()
        self.current = kid
        return kid

    def retire(self, kid: str) -> None:
        """Stop publishing `kid` (tokens it signed no longer validate)."""
        if kid == self.current:
            raise ValueError("rotate to a new key before retiring the current one")
        self._published.pop(kid, None)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._published)

    def jwks(self, issuer: str | None = None) -> dict[str, Any]:
        keys = []
        for kid, key in self._published.items():
            jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig", "x5t": kid})
            if issuer:
                jwk["issuer"] = issuer
            keys.append(jwk)
        return {"keys": keys}

    def private_key(self, kid: str) -> rsa.RSAPrivateKey:
        """The key for `kid`; an unknown kid gets a fresh key that is never published."""
        if kid in self._published:
            return self._published[kid]
        if kid not in self._unpublished:
            self._unpublished[kid] = new_rsa_key()
        return self._unpublished[kid]

    def public_key(self, kid: str) -> rsa.RSAPublicKey | None:
        key = self._published.get(kid)
        return key.public_key() if key else None

    def sign(
        self,
        payload: Mapping[str, Any],
        *,
        kid: str | None = None,
        alg: str = "RS256",
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        kid = kid or self.current
        header: dict[str, Any] = {"typ": "JWT", "alg": alg, "kid": kid}
        header.update(headers or {})
        if alg in ASYMMETRIC_ALGS:
            extra = {k: v for k, v in header.items() if k not in ("alg",)}
            return jwt.encode(dict(payload), self.private_key(kid), algorithm=alg, headers=extra)
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(dict(payload), separators=(",", ":")).encode())
        )
        if alg == "none":
            return signing_input + "."
        if alg == "HS256":
            # Keyed with the public key PEM: what a verifier that trusts the token's
            # `alg` would check it against. Valid tokens never look like this.
            secret = public_pem(self.private_key(kid))
            mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            return signing_input + "." + b64url(mac)
        raise ValueError(f"unsupported alg {alg!r}")
