"""Which provider serves which credential `type`."""

from __future__ import annotations

from gateway.config.model import (
    ClientCertificateCredential,
    ClientSecretCredential,
    Identity,
    ManagedIdentityCredential,
    OnBehalfOfCredential,
    Upstream,
    WorkloadIdentityCredential,
)
from gateway.tokens.base import CredentialProvider
from gateway.tokens.managed_identity import ManagedIdentityProvider
from gateway.tokens.msal_confidential import ConfidentialCredential
from gateway.tokens.on_behalf_of import OnBehalfOfProvider

EntraCredential = (
    ClientSecretCredential
    | ClientCertificateCredential
    | ManagedIdentityCredential
    | WorkloadIdentityCredential
    | OnBehalfOfCredential
)


def provider_for(
    name: str, config: EntraCredential, identity: Identity, egress: Upstream | None = None
) -> CredentialProvider:
    """A provider for one `credentials` entry (no I/O happens until it acquires);
    `egress`: the `upstream` settings whose proxy reaches the identity provider."""
    if isinstance(config, ManagedIdentityCredential):
        return ManagedIdentityProvider(name, config, identity, egress)
    if isinstance(config, OnBehalfOfCredential):
        return OnBehalfOfProvider(name, config, identity, egress)
    return ConfidentialCredential(name, config, identity, egress)
