"""Stage 1: authenticate the client.

Takes the request: its `Authorization` header (a gateway key sent where a PAT
is sent, or an Entra ID access token) or its TLS client certificate. Returns
the `ClientIdentity` of the policy client it proves. Raises
- Unauthenticated (401) for a missing, malformed, unknown or expired
  credential, and for an Azure DevOps PAT (reason `pat_not_accepted`);
- Denied (403, `unknown_client`) for a valid Entra token or certificate that
  belongs to no client;
- TooManyRequests (429, `too_many_failed_authentications`) while the source
  address is slowed down after repeated failures.

Order: a JWT-shaped credential goes to Entra ID validation, any other
credential to the gateway keys; a request without `Authorization` may be
identified by its client certificate. Secrets never reach logs or errors: the
identity's subject is a key id, a token's oid/appid or a certificate
fingerprint.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.authn.api_key import ApiKeyAuthenticator
from gateway.authn.base import Authenticator, Presented, presented_credential
from gateway.authn.certificate import CertificateAuthenticator
from gateway.authn.entra import EntraAuthenticator
from gateway.authn.shared_throttle import SharedThrottle
from gateway.authn.throttle import FailureThrottle
from gateway.config.model import Config
from gateway.errors import Denied, Unauthenticated
from gateway.state import RedisStore
from gateway.types import ClientIdentity, RequestContext

__all__ = ["Authentication", "Authenticator", "Presented"]

log = logging.getLogger("azdo_gateway.authn")


class Authentication:
    """The chain of authenticators for one configuration."""

    def __init__(self, config: Config) -> None:
        limits = config.gateway.limits
        self._max_bytes = min(limits.max_header_bytes, 16 * 1024)
        self.api_keys = ApiKeyAuthenticator(config)
        self.entra = EntraAuthenticator(config)
        self.certificates = CertificateAuthenticator(config)
        self.throttle = FailureThrottle()
        self.shared_throttle: SharedThrottle | None = None  # state.backend: redis

    def share(self, store: RedisStore | None) -> None:
        """Count failed authentications in `store`, for every process sharing it."""
        self.shared_throttle = None if store is None else SharedThrottle(store, self.throttle)

    async def authenticate(self, request: web.BaseRequest, ctx: RequestContext) -> ClientIdentity:
        remote = ctx.source  # the peer, or what a trusted proxy says
        shared = self.shared_throttle
        if shared is None:
            self.throttle.check(remote)
        else:
            shared.check(remote)
        try:
            presented = presented_credential(request.headers, max_bytes=self._max_bytes)
            identity = await self._identify(request, presented)
        except (Unauthenticated, Denied) as err:
            if err.reason != "unauthenticated":  # a wrong credential, not a missing one
                if shared is None:
                    self.throttle.failed(remote)
                else:
                    await shared.failed(remote)
                log.info(
                    "authentication failed: %s (source %s, request %s)",
                    err.reason,
                    remote,
                    ctx.request_id,
                )
            raise
        return identity

    async def _identify(
        self, request: web.BaseRequest, presented: Presented | None
    ) -> ClientIdentity:
        if presented is None:
            identity = await self.certificates.authenticate(request, None)
            if identity is not None:
                return identity
            raise Unauthenticated(
                "no credential: send a gateway key as the password of HTTP Basic"
                " authentication (any user name) or as a Bearer token,"
                " or an Entra ID access token as a Bearer token"
            )
        chain: tuple[Authenticator, ...] = (self.entra,) if presented.is_jwt else (self.api_keys,)
        for authenticator in chain:
            identity = await authenticator.authenticate(request, presented)
            if identity is not None:
                return identity
        raise Unauthenticated("credential not recognised", reason="unknown_key")

    def adopt(self, previous: Authentication) -> None:
        """Take over what the chain this one replaces (a reload) learned: the
        failure counts of every source, and the identity provider's signing keys
        when `identity` is unchanged. Validated tokens are checked again once,
        since the new policy may map them to other clients."""
        self.throttle = previous.throttle
        self.shared_throttle = previous.shared_throttle
        self.entra.adopt(previous.entra)

    async def close(self) -> None:
        await self.entra.close()
