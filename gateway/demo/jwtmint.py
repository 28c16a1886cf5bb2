"""Signing keys and JWT minting for the demo Entra ID stand-in.

`SigningKeys` holds the RSA keys the stand-in publishes in its JWKS (with
rotation) and signs JWTs with them, as Entra ID does. Forged tokens (no
signature, a symmetric one, a key nobody publishes) are made only by tests
(tests/fakes/jwtforge.py).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class SigningKeys:
    """Published signing keys; the newest is current."""

    def __init__(self) -> None:
        self._published: dict[str, rsa.RSAPrivateKey] = {}
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
        """The published key `kid` (KeyError if there is none)."""
        return self._published[kid]

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
        """`payload` signed with the published key `kid` (default: the current one)."""
        if alg not in ASYMMETRIC_ALGS:
            raise ValueError(f"unsupported alg {alg!r} (expected one of {sorted(ASYMMETRIC_ALGS)})")
        kid = kid or self.current
        header: dict[str, Any] = {"typ": "JWT", "kid": kid}
        header.update(headers or {})
        header.pop("alg", None)
        return jwt.encode(dict(payload), self.private_key(kid), algorithm=alg, headers=header)
