"""Managed identity through MSAL's ManagedIdentityClient.

System-assigned (no id configured) or user-assigned by `client_id`,
`object_id` or `resource_id`. MSAL picks the platform's endpoint from the
environment (App Service / Functions: IDENTITY_ENDPOINT + IDENTITY_HEADER;
Azure Arc; Service Fabric; Cloud Shell; otherwise the VM / AKS / Container
Apps instance metadata service), so the same configuration works on each.
The endpoint is local: the session never goes through a proxy.
"""

from __future__ import annotations

import msal

from gateway.config.model import Identity, ManagedIdentityCredential, Upstream
from gateway.tokens.base import AZURE_DEVOPS_RESOURCE, IssuedToken
from gateway.tokens.msal_common import (
    MsalProvider,
    NoHttpCache,
    NoTokenCache,
    call_msal,
    session_for,
)


def _identity(config: ManagedIdentityCredential) -> msal.ManagedIdentity:
    if config.client_id:
        return msal.UserAssignedManagedIdentity(client_id=config.client_id)
    if config.object_id:
        return msal.UserAssignedManagedIdentity(object_id=config.object_id)
    if config.resource_id:
        return msal.UserAssignedManagedIdentity(resource_id=config.resource_id)
    return msal.SystemAssignedManagedIdentity()


class ManagedIdentityProvider(MsalProvider[ManagedIdentityCredential]):
    def __init__(
        self,
        name: str,
        config: ManagedIdentityCredential,
        identity: Identity,
        egress: Upstream | None = None,
    ) -> None:
        super().__init__(name, config, identity, egress)
        self._client: msal.ManagedIdentityClient | None = None

    def _mi_client(self) -> msal.ManagedIdentityClient:
        with self._lock:
            if self._client is None:
                self._session = session_for(self._trust_store(), None, self.egress)
                self._client = msal.ManagedIdentityClient(
                    _identity(self.config),
                    http_client=self._session,
                    token_cache=NoTokenCache(),
                    http_cache=NoHttpCache(),
                )
            return self._client

    def acquire(self, scopes: tuple[str, ...], user_assertion: str | None = None) -> IssuedToken:
        resource = scopes[0].removesuffix("/.default") if scopes else AZURE_DEVOPS_RESOURCE
        with self._acquiring():
            return call_msal(
                lambda: self._mi_client().acquire_token_for_client(resource=resource),
                session=lambda: self._session,
            )

    def close(self) -> None:
        with self._lock:
            self._client = None
            self._release()
