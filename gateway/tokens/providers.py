"""Which provider serves which credential `type`."""

from __future__ import annotations

from gateway.config.model import (
    ClientCertificateCredential,
    ClientSecretCredential,
    Identity,
    ManagedIdentityCredential,
    OnBehalfOfCredential,
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


def provider_for(name: str, config: EntraCredential, identity: Identity) -> CredentialProvider:
    """A provider for one `credentials` entry (no I/O happens until it acquires)."""
    if isinstance(config, ManagedIdentityCredential):
        return ManagedIdentityProvider(name, config, identity)
    if isinstance(config, OnBehalfOfCredential):
        return OnBehalfOfProvider(name, config, identity)
    return ConfidentialCredential(name, config, identity)
