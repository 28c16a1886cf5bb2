"""Stage 4: the upstream credential to inject.

`TokenBroker.acquire(identity, client)` returns the `UpstreamToken` (the
Authorization header value) for the credential the client's policy names.
"""

from __future__ import annotations

import base64

from gateway.config.model import Client, Config, PatCredential
from gateway.errors import CredentialUnavailable
from gateway.types import ClientIdentity, UpstreamToken


class TokenBroker:
    def __init__(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    async def acquire(self, identity: ClientIdentity, client: Client) -> UpstreamToken:
        cred = self.config.gateway.credentials.get(client.credential)
        if isinstance(cred, PatCredential) and cred.pat is not None:
            raw = f"{cred.user}:{cred.pat.get_secret_value()}".encode()
            return UpstreamToken("Basic " + base64.b64encode(raw).decode(), client.credential)
        raise CredentialUnavailable(f"credential {client.credential!r} is not usable")

    def invalidate(self, token: UpstreamToken) -> None:
        return None
