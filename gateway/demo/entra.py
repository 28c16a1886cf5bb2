"""DEMO/TEST STAND-IN for Microsoft Entra ID. Never used by `azdo-gateway run`.

A real TLS aiohttp server on loopback, with its own CA (see `ca_file`), that
speaks enough of Entra ID's protocol for MSAL to run against it unmodified:

    GET  /{tenant}/v2.0/.well-known/openid-configuration   discovery (v1: without /v2.0)
    GET  /{tenant}/discovery/v2.0/keys                      JWKS (rotate_signing_key())
    POST /{tenant}/oauth2/v2.0/token                        client_credentials with a client
         secret; jwt-bearer on-behalf-of -> a token for that user

Errors look like Entra's: {"error", "error_description": "AADSTS...", "error_codes"}.
`mint_access_token()` makes user tokens (the demo prints one). Only what the demo
uses is here: tests/fakes/entra.py adds certificate and federated-token assertions,
managed identity endpoints, request counting and faults, and forged tokens.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.demo.entra_grants import (
    AZURE_DEVOPS_RESOURCE,
    AppRegistration,
    GrantError,
    authenticate_client,
    validate_user_assertion,
)
from gateway.demo.jwtmint import SigningKeys
from gateway.demo.pki import DemoCA

__all__ = ["AZURE_DEVOPS_RESOURCE", "EntraStandIn", "aad_error", "grant_kind"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


def aad_error(status: int, error: str, code: int, description: str) -> web.Response:
    """An error response shaped like Entra ID's."""
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return web.json_response(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {corr} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
        },
        status=status,
    )


def grant_error(err: GrantError) -> web.Response:
    """The token endpoint's answer to a refused grant."""
    return aad_error(err.status, err.error, err.code, err.description)


def grant_kind(form: Mapping[str, str]) -> str:
    """ "client_credentials" or "on_behalf_of", what a token request asks for."""
    grant = form.get("grant_type", "")
    if grant == "client_credentials":
        return "client_credentials"
    if grant == JWT_BEARER and form.get("requested_token_use") == "on_behalf_of":
        return "on_behalf_of"
    raise GrantError(
        400,
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant}'.",
    )


class EntraStandIn:
    """An Entra ID look-alike for the demo and for tests. Start with `await start()`."""

    def __init__(
        self,
        tenant_id: str | None = None,
        *,
        host: str = "127.0.0.1",
        token_lifetime_s: float = 3600,
        refresh_in_s: float | None = None,
        default_audience: str = "api://azdo-gateway",
    ) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.tenants = {self.tenant_id}
        self.host = host
        self.token_lifetime_s = token_lifetime_s
        self.refresh_in_s = refresh_in_s
        self.default_audience = default_audience
        self.keys = SigningKeys()
        self.apps: dict[str, AppRegistration] = {}
        self.ca = DemoCA("azdo-gateway demo Entra ID CA")
        self._dir = tempfile.TemporaryDirectory(prefix="azdo-gateway-entra-")
        self.ca_file = self.ca.write_cert(Path(self._dir.name) / "entra-ca.pem")
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.Transport] = set()  # uvloop's are not weakref-able
        self.url = ""

    # --- lifecycle -------------------------------------------------------

    async def start(self, port: int = 0) -> EntraStandIn:
        ctx: ssl.SSLContext = self.ca.server_context(
            self.ca.issue_server((self.host, "localhost")), Path(self._dir.name)
        )
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, port, ssl_context=ctx).start()
        self.url = f"https://{self.host}:{self._runner.addresses[0][1]}"
        return self

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._track_connection])
        r = app.router
        r.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery_v2)
        r.add_get("/{tenant}/.well-known/openid-configuration", self._discovery_v1)
        r.add_get("/{tenant}/discovery/v2.0/keys", self._jwks)
        r.add_get("/{tenant}/discovery/keys", self._jwks)
        r.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        return app

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # A TLS close waits for the peer's close_notify; keep-alive clients that are
        # still open would hold the socket past the end of the event loop.
        for transport in list(self._transports):
            transport.abort()
        self._dir.cleanup()

    @web.middleware
    async def _track_connection(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.transport is not None and request.transport not in self._transports:
            self._transports = {t for t in self._transports if not t.is_closing()}
            self._transports.add(request.transport)
        return await handler(request)

    async def __aenter__(self) -> EntraStandIn:
        return await self.start() if not self.url else self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- addresses ---------------------------------------------------------

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant_id}"

    def issuer(self, tenant: str | None = None, version: int = 2) -> str:
        """`iss` of tokens it issues. (Real Entra v1 tokens say https://sts.windows.net/{tid}/.)"""
        tenant = tenant or self.tenant_id
        return f"{self.url}/{tenant}/v2.0" if version == 2 else f"{self.url}/{tenant}/"

    def token_endpoint(self, tenant: str | None = None) -> str:
        return f"{self.url}/{tenant or self.tenant_id}/oauth2/v2.0/token"

    # --- registration --------------------------------------------------------

    def register_app(
        self,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        identifier_uris: tuple[str, ...] = (),
        delegated_scopes: frozenset[str] | None = None,
    ) -> AppRegistration:
        """Register (or extend) an application; returns its registration.

        `delegated_scopes` limits the Azure DevOps scopes users consented to (None: any).
        """
        client_id = client_id or str(uuid.uuid4())
        app = self.apps.get(client_id) or AppRegistration(client_id, str(uuid.uuid4()))
        self.apps[client_id] = app
        if secret is not None:
            app.secrets.append(secret)
        app.identifier_uris += identifier_uris
        if delegated_scopes is not None:
            app.delegated_scopes = delegated_scopes
        return app

    def rotate_signing_key(self) -> str:
        return self.keys.rotate()

    # --- minting -------------------------------------------------------------

    def mint_access_token(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        kid: str | None = None,
        tenant: str | None = None,
        audience: str | None = None,
        lifetime_s: float | None = None,
        version: int = 2,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """An access token signed like Entra's (by default a user token for the gateway),
        with the published key `kid` (default: the current one).

        `claims` override the defaults; a claim given as None is left out.
        """
        payload = self.access_token_claims(
            claims, tenant=tenant, audience=audience, lifetime_s=lifetime_s, version=version
        )
        return self.keys.sign(payload, kid=kid, headers=headers)

    def access_token_claims(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        tenant: str | None = None,
        audience: str | None = None,
        lifetime_s: float | None = None,
        version: int = 2,
    ) -> dict[str, Any]:
        """The claims `mint_access_token` signs."""
        now = int(time.time())
        tenant = tenant or self.tenant_id
        oid = str(uuid.uuid4())
        payload: dict[str, Any] = {
            "aud": audience or self.default_audience,
            "iss": self.issuer(tenant, version),
            "iat": now,
            "nbf": now,
            "exp": now + int(self.token_lifetime_s if lifetime_s is None else lifetime_s),
            "tid": tenant,
            "oid": oid,
            "sub": oid,
            "ver": "2.0" if version == 2 else "1.0",
            "scp": "access_as_user",
            "azp" if version == 2 else "appid": str(uuid.uuid4()),
            "name": "Demo User",
            "preferred_username" if version == 2 else "upn": "demo.user@example.com",
            "uti": uuid.uuid4().hex[:22],
        }
        for name, value in (claims or {}).items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        return payload

    def _issue(self, resource: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        lifetime = int(self.token_lifetime_s)
        token = self.mint_access_token(claims, audience=resource, lifetime_s=lifetime, version=1)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if self.refresh_in_s is not None:
            body["refresh_in"] = int(self.refresh_in_s)
        return body

    # --- handlers --------------------------------------------------------------

    def _tenant(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        if tenant not in self.tenants:
            raise GrantError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make "
                "sure you have the correct tenant ID and are signing into the correct cloud.",
            )
        return tenant

    async def _discovery_v2(self, request: web.Request) -> web.Response:
        try:
            tenant = self._tenant(request)
        except GrantError as err:
            return grant_error(err)
        base = f"{self.url}/{tenant}"
        return web.json_response(
            {
                "issuer": self.issuer(tenant),
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "subject_types_supported": ["pairwise"],
                "tenant_region_scope": "WW",
                "cloud_instance_name": "azdo-gateway.demo",
            }
        )

    async def _discovery_v1(self, request: web.Request) -> web.Response:
        try:
            tenant = self._tenant(request)
        except GrantError as err:
            return grant_error(err)
        base = f"{self.url}/{tenant}"
        return web.json_response(
            {
                "issuer": self.issuer(tenant, 1),
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{self.url}/common/discovery/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.keys.jwks())

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            tenant = self._tenant(request)
            kind = grant_kind(form)
            app = self._authenticate(form, tenant)
            scopes = form.get("scope", "").split()
            if kind == "client_credentials":
                return web.json_response(self._client_credentials(app, tenant, scopes))
            return web.json_response(self._on_behalf_of(app, tenant, scopes, form))
        except GrantError as err:
            return grant_error(err)

    def _authenticate(self, form: Mapping[str, str], tenant: str) -> AppRegistration:
        """The application the token request signs in as (by client secret)."""
        return authenticate_client(self.apps, form)

    def _client_credentials(
        self, app: AppRegistration, tenant: str, scopes: list[str]
    ) -> dict[str, Any]:
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise GrantError(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier.",
            )
        resource = scopes[0].removesuffix("/.default")
        return self._issue(
            resource,
            {
                "tid": tenant,
                "oid": app.object_id,
                "sub": app.object_id,
                "appid": app.client_id,
                "idtyp": "app",
                "scp": None,
                "name": None,
                "upn": None,
                "iss": self.issuer(tenant, 1),
            },
        )

    def _on_behalf_of(
        self, app: AppRegistration, tenant: str, scopes: list[str], form: Mapping[str, str]
    ) -> dict[str, Any]:
        user = validate_user_assertion(
            form.get("assertion", ""), app, self.keys, self.issuer(tenant), tenant
        )
        wanted = [s for s in scopes if s not in _OIDC_SCOPES]
        resources = {s.rpartition("/")[0] for s in wanted}
        if not wanted or len(resources) != 1 or "" in resources:
            raise GrantError(
                400,
                "invalid_scope",
                70011,
                f"The provided request must include scopes of one resource: {' '.join(scopes)}",
            )
        resource = resources.pop()
        short = [s.rpartition("/")[2] for s in wanted]
        if app.delegated_scopes is not None:
            missing = [s for s in short if s not in app.delegated_scopes and s != ".default"]
            if missing:
                raise GrantError(
                    400,
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the application "
                    f"with ID '{app.client_id}'. Missing: {' '.join(missing)}.",
                )
        if short == [".default"]:
            short = sorted(app.delegated_scopes or {"user_impersonation"})
        body = self._issue(
            resource,
            {
                "tid": tenant,
                "oid": user["oid"],
                "sub": user.get("sub", user["oid"]),
                "appid": app.client_id,
                "scp": " ".join(short),
                "upn": user.get("preferred_username") or user.get("upn"),
                "name": user.get("name"),
                "iss": self.issuer(tenant, 1),
            },
        )
        body["scope"] = " ".join(wanted)
        return body
