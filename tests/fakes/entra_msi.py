"""Managed identity endpoints (App Service and IMDS) the tests add to the Entra ID stand-in.

    GET /msi/token?api-version=2019-08-01&resource=...[&client_id|object_id|mi_res_id]
        with X-IDENTITY-HEADER: the stand-in's `identity_header` (App Service, Functions)
    GET /metadata/identity/oauth2/token?resource=...  with Metadata: true (Azure VM, AKS)

A request naming no identity gets the system-assigned one, if registered.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class ManagedIdentityRecord:
    client_id: str
    object_id: str
    resource_id: str | None = None
    system_assigned: bool = False


class ManagedIdentityEndpoints:
    url: str
    identity_header: str
    managed_identities: list[ManagedIdentityRecord]

    async def intercept(
        self, grant: str, params: Mapping[str, str], request: web.Request
    ) -> web.StreamResponse | None:
        return None

    def issuer(self, tenant: str | None = None, version: int = 2) -> str:
        raise NotImplementedError

    def _issue(self, resource: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def msi_endpoint(self) -> str:
        """IDENTITY_ENDPOINT for the App Service managed identity protocol."""
        return f"{self.url}/msi/token"

    def register_managed_identity(
        self,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        resource_id: str | None = None,
        system_assigned: bool = False,
    ) -> ManagedIdentityRecord:
        mi = ManagedIdentityRecord(
            client_id=client_id or str(uuid.uuid4()),
            object_id=object_id or str(uuid.uuid4()),
            resource_id=resource_id,
            system_assigned=system_assigned,
        )
        self.managed_identities.append(mi)
        return mi

    def _managed_identity(self, params: Mapping[str, str]) -> ManagedIdentityRecord | None:
        for mi in self.managed_identities:
            if (
                (params.get("client_id") and params["client_id"] == mi.client_id)
                or (params.get("object_id") and params["object_id"] == mi.object_id)
                or (params.get("principal_id") and params["principal_id"] == mi.object_id)
                or (params.get("mi_res_id") and params["mi_res_id"] == mi.resource_id)
                or (params.get("msi_res_id") and params["msi_res_id"] == mi.resource_id)
            ):
                return mi
        selectors = ("client_id", "object_id", "principal_id", "mi_res_id", "msi_res_id")
        if not any(params.get(k) for k in selectors):
            return next((mi for mi in self.managed_identities if mi.system_assigned), None)
        return None

    async def _msi(self, request: web.Request, *, app_service: bool) -> web.StreamResponse:
        params = dict(request.query)
        if app_service:
            given = request.headers.get("X-IDENTITY-HEADER", "")
            if not hmac.compare_digest(given.encode(), self.identity_header.encode()):
                return web.json_response(
                    {"statusCode": 401, "message": "Unauthorized: missing or bad header"},
                    status=401,
                )
        elif request.headers.get("Metadata") != "true":
            return web.json_response(
                {
                    "error": "invalid_request",
                    "error_description": "Required metadata header not specified",
                },
                status=400,
            )
        hooked = await self.intercept("managed_identity", params, request)
        if hooked is not None:
            return hooked
        mi = self._managed_identity(params)
        resource = params.get("resource", "")
        if mi is None or not resource:
            return web.json_response(
                {
                    "statusCode": 400,
                    "message": "No managed identity found for the request",
                    "error": "invalid_request",
                },
                status=400,
            )
        body = self._issue(
            resource,
            {
                "oid": mi.object_id,
                "sub": mi.object_id,
                "appid": mi.client_id,
                "idtyp": "app",
                "scp": None,
                "name": None,
                "upn": None,
                "iss": self.issuer(None, 1),
            },
        )
        expires_on = int(time.time()) + int(body["expires_in"])
        return web.json_response(
            {
                "access_token": body["access_token"],
                "token_type": "Bearer",
                "resource": resource,
                "client_id": mi.client_id,
                "expires_on": str(expires_on),
                "expires_in": str(body["expires_in"]),
            }
        )

    async def _msi_app_service(self, request: web.Request) -> web.StreamResponse:
        return await self._msi(request, app_service=True)

    async def _msi_imds(self, request: web.Request) -> web.StreamResponse:
        return await self._msi(request, app_service=False)
