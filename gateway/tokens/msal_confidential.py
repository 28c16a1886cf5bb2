"""Service principal credentials through MSAL's ConfidentialClientApplication:
`client_secret`, `client_certificate` and `workload_identity`.

Takes a credential config and `identity`; `acquire(scopes)` runs the client
credentials grant against `{authority_host}/{tenant}` with instance discovery
off (MSAL asks no host but the configured one). Secret and certificate files
are re-read when they change on disk; a workload identity's federated token
file is re-read for every token request, so a rotated token is always used.
Certificate assertions are signed here (PS256, `x5t#S256`, and `x5c` when
`send_x5c` is set, for subject-name/issuer authentication).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import msal
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config.model import (
    ClientCertificateCredential,
    ClientSecretCredential,
    Identity,
    OnBehalfOfCredential,
    Upstream,
    WorkloadIdentityCredential,
)
from gateway.tokens.base import IssuedToken, TokenAcquisitionError
from gateway.tokens.msal_common import (
    MsalProvider,
    NoHttpCache,
    NoTokenCache,
    call_msal,
    session_for,
)

AppCredential = (
    ClientSecretCredential
    | ClientCertificateCredential
    | WorkloadIdentityCredential
    | OnBehalfOfCredential
)
ClientCredential = str | dict[str, Any]
ASSERTION_LIFETIME_S = 600


def authority_for(identity: Identity, tenant_id: str | None) -> str:
    tenant = tenant_id or identity.tenant_id
    if not tenant:
        raise TokenAcquisitionError(
            "config_error", "no tenant: set identity.tenant_id or the credential's tenant_id"
        )
    return f"{identity.authority_host.rstrip('/')}/{tenant}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _stamp(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TokenAcquisitionError(
            "credential_file_unreadable", f"cannot read {what} {path}: {err.strerror}"
        ) from None


class CertificateAssertion:
    """Signs client assertions with the key of a PEM certificate file."""

    def __init__(self, pem: bytes, password: str | None, client_id: str, send_x5c: bool) -> None:
        try:
            key = serialization.load_pem_private_key(
                pem, password=password.encode() if password else None
            )
            certs = x509.load_pem_x509_certificates(pem)
        except (ValueError, TypeError) as err:
            raise TokenAcquisitionError(
                "bad_certificate",
                f"certificate_file must hold a PEM certificate and its private key: {err}",
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TokenAcquisitionError(
                "bad_certificate", "Entra ID certificate credentials need an RSA key"
            )
        leaf = next((c for c in certs if c.public_key() == key.public_key()), None)
        if leaf is None:
            raise TokenAcquisitionError(
                "bad_certificate", "no certificate in certificate_file matches its private key"
            )
        chain = [leaf, *(c for c in certs if c is not leaf)]
        self._key = key
        self._client_id = client_id
        self._headers: dict[str, Any] = {
            "x5t#S256": _b64url(leaf.fingerprint(hashes.SHA256())),
        }
        if send_x5c:
            der = serialization.Encoding.DER
            self._headers["x5c"] = [base64.b64encode(c.public_bytes(der)).decode() for c in chain]
        self.audience = ""

    def __call__(self) -> str:
        now = int(time.time())
        claims = {
            "aud": self.audience,
            "iss": self._client_id,
            "sub": self._client_id,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_S,
        }
        return jwt.encode(claims, self._key, algorithm="PS256", headers=self._headers)


class ConfidentialCredential(MsalProvider[AppCredential]):
    """A confidential client (service principal) for one `credentials` entry."""

    def __init__(
        self, name: str, config: AppCredential, identity: Identity, egress: Upstream | None = None
    ) -> None:
        super().__init__(name, config, identity, egress)
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_stamp: object = None
        self._secrets: tuple[str | None, ...] = ()

    # --- what proves the client ------------------------------------------------

    def _files(self) -> tuple[str | None, ...]:
        c = self.config
        return (
            getattr(c, "client_secret_file", None),
            getattr(c, "certificate_file", None),
        )

    def _client_credential(self) -> ClientCredential:
        c = self.config
        secret = getattr(c, "client_secret", None)
        if secret is not None:
            return str(secret.get_secret_value())
        secret_file = getattr(c, "client_secret_file", None)
        if secret_file:
            value = _read(secret_file, "client_secret_file").decode().strip()
            if not value:
                raise TokenAcquisitionError("config_error", f"{secret_file} is empty")
            return value
        if isinstance(c, WorkloadIdentityCredential):
            return {"client_assertion": self._federated_token}
        cert_file = getattr(c, "certificate_file", None)
        if cert_file:
            password = getattr(c, "certificate_password", None)
            return {
                "client_assertion": CertificateAssertion(
                    _read(cert_file, "certificate_file"),
                    password.get_secret_value() if password is not None else None,
                    c.client_id,
                    bool(getattr(c, "send_x5c", False)),
                )
            }
        raise TokenAcquisitionError("config_error", "no client secret or certificate configured")

    def _federated_token(self) -> str:
        assert isinstance(self.config, WorkloadIdentityCredential)
        token = _read(self.config.token_file, "token_file").decode().strip()
        if not token:
            raise TokenAcquisitionError("config_error", f"{self.config.token_file} is empty")
        return token

    # --- the MSAL application ----------------------------------------------------

    def _application(self) -> msal.ConfidentialClientApplication:
        """The MSAL app, rebuilt when a secret or certificate file changed."""
        stamp = tuple(_stamp(f) for f in self._files())
        with self._lock:
            if self._app is not None and stamp == self._app_stamp:
                return self._app
            authority = authority_for(self.identity, self.config.tenant_id)
            trust = self._trust_store()
            credential = self._client_credential()
            self._secrets = (credential,) if isinstance(credential, str) else ()
            app = msal.ConfidentialClientApplication(
                self.config.client_id,
                client_credential=credential,
                authority=authority,
                instance_discovery=False,
                http_client=(session := session_for(trust, authority, self.egress)),
                token_cache=NoTokenCache(),
                http_cache=NoHttpCache(),
                azure_region=False,
            )
            if isinstance(credential, dict):
                assertion = credential["client_assertion"]
                if isinstance(assertion, CertificateAssertion):
                    assertion.audience = app.authority.token_endpoint
            if self._app is not None:
                self._app.http_client.close()
            self._app, self._app_stamp, self._session = app, stamp, session
            return app

    def _acquire_with(self, call: Callable[[msal.ConfidentialClientApplication], Any]) -> Any:
        with self._acquiring():
            return call_msal(
                lambda: call(self._application()), self._secret_values(), lambda: self._session
            )

    def _secret_values(self) -> tuple[str | None, ...]:
        secret = getattr(self.config, "client_secret", None)
        own = secret.get_secret_value() if secret is not None else None
        return (own, *self._secrets)

    def acquire(self, scopes: tuple[str, ...], user_assertion: str | None = None) -> IssuedToken:
        token: IssuedToken = self._acquire_with(
            lambda app: app.acquire_token_for_client(list(scopes))
        )
        return token

    def close(self) -> None:
        with self._lock:
            self._app = None
            self._release()  # the session is the app's http_client
