"""Certificate and federated-token client assertions for the Entra ID stand-in, for tests.

The demo authenticates its applications by client secret only; tests also sign
in with a certificate assertion (by `x5t#S256`/`x5t` thumbprint, or `x5c` for
subject-name/issuer auth) or a federated workload token. `check_assertion()`
verifies one against an application's `ClientProofs`, or raises `GrantError`
with the AADSTS code Entra ID uses.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from gateway.demo.entra_grants import GrantError
from gateway.demo.jwtmint import SigningKeys, b64url
from gateway.demo.pki import DemoCA

FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_CERT_ALGS = ["RS256", "PS256"]


@dataclass
class ClientProofs:
    """What an application may sign in with besides its secrets."""

    client_id: str
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)  # x5t#S256 ->
    trusted_subjects: set[str] = field(default_factory=set)
    federated: list[tuple[str, str, str]] = field(default_factory=list)  # issuer, sub, aud

    def add_certificate(self, pem: bytes) -> None:
        cert = x509.load_pem_x509_certificate(pem)
        self.certificates[b64url(cert.fingerprint(hashes.SHA256()))] = cert


def _expired_assertion() -> GrantError:
    return GrantError(
        400, "invalid_client", 700024, "Client assertion is not within its valid time range."
    )


def _bad_signature(reason: str) -> GrantError:
    return GrantError(
        401,
        "invalid_client",
        700027,
        f"Client assertion failed signature validation. [Reason - {reason}]",
    )


def check_assertion(
    app: ClientProofs,
    form: Mapping[str, str],
    token_endpoint: str,
    ca: DemoCA,
    federation_keys: SigningKeys,
) -> None:
    """Verifies the request's `client_assertion`: signed by a certificate of the
    application (it is its own issuer) or a workload token it federates with."""
    assertion = form.get("client_assertion", "")
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise GrantError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise GrantError(400, "invalid_client", 50027, f"Invalid JWT token. {err}") from None
    if unverified.get("iss") == app.client_id:
        _check_certificate_assertion(app, assertion, header, token_endpoint, ca)
    else:
        _check_federated_assertion(app, assertion, unverified, federation_keys)


def _certificate_for(app: ClientProofs, header: Mapping[str, Any], ca: DemoCA) -> x509.Certificate:
    if header.get("x5c"):
        leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
        known = app.certificates.get(b64url(leaf.fingerprint(hashes.SHA256())))
        if known is not None:
            return known
        names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else ""
        if subject in app.trusted_subjects:
            try:
                leaf.verify_directly_issued_by(ca.cert)
            except (ValueError, TypeError, InvalidSignature):
                raise _bad_signature(
                    "The certificate was not issued by a trusted issuer."
                ) from None
            return leaf
        raise _bad_signature(f"The key was not found. Subject '{subject}' is not trusted.")
    if header.get("x5t#S256"):
        cert = app.certificates.get(header["x5t#S256"])
        if cert is not None:
            return cert
    if header.get("x5t"):
        for cert in app.certificates.values():
            if b64url(cert.fingerprint(hashes.SHA1())) == header["x5t"]:  # noqa: S303
                return cert
    raise _bad_signature("The key was not found.")


def _check_certificate_assertion(
    app: ClientProofs,
    assertion: str,
    header: Mapping[str, Any],
    token_endpoint: str,
    ca: DemoCA,
) -> None:
    cert = _certificate_for(app, header, ca)
    try:
        claims = jwt.decode(
            assertion,
            cert.public_key(),  # type: ignore[arg-type]
            algorithms=_CERT_ALGS,
            audience=[token_endpoint, token_endpoint.rsplit("/oauth2/", 1)[0]],
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise _expired_assertion() from None
    except jwt.InvalidAudienceError:
        raise GrantError(
            400,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter "
            "or the audience is not this token endpoint.",
        ) from None
    except jwt.InvalidSignatureError:
        raise _bad_signature("The provided signature value did not match.") from None
    except jwt.PyJWTError as err:
        raise GrantError(400, "invalid_client", 50027, f"Invalid JWT token. {err}") from None
    if claims.get("sub") != app.client_id:
        raise GrantError(
            400, "invalid_client", 700021, "Client assertion sub doesn't match 'client_id'."
        )


def _check_federated_assertion(
    app: ClientProofs,
    assertion: str,
    unverified: Mapping[str, Any],
    federation_keys: SigningKeys,
) -> None:
    iss, sub = unverified.get("iss"), unverified.get("sub")
    matching = [f for f in app.federated if f[0] == iss and f[1] == sub]
    if not matching:
        raise GrantError(
            400,
            "invalid_request",
            70021,
            f"No matching federated identity record found for presented assertion. "
            f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'.",
        )
    try:
        kid = jwt.get_unverified_header(assertion).get("kid", "")
        key = federation_keys.public_key(kid)
        if key is None:
            raise _bad_signature("The key was not found.")
        jwt.decode(
            assertion,
            key,
            algorithms=["RS256"],
            audience=[f[2] for f in matching],
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise _expired_assertion() from None
    except jwt.InvalidAudienceError:
        raise GrantError(
            400,
            "invalid_request",
            700212,
            "No matching federated identity record found for presented assertion audience.",
        ) from None
    except jwt.PyJWTError as err:
        raise _bad_signature(str(err)) from None
