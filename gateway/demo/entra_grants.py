"""Client authentication and user-assertion checks of the demo Entra ID stand-in.

`authenticate_client()` takes a token request's form and returns the app
registration whose client secret it carries, or raises `GrantError` with the
AADSTS code Entra ID uses (certificate and federated-token assertions, which the
demo does not use, are checked by tests/fakes/entra_assertions.py).
`validate_user_assertion()` checks the user token of an on-behalf-of request.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from gateway.demo.jwtmint import SigningKeys

AZURE_DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"


class GrantError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status, self.error, self.code, self.description = status, error, code, description


@dataclass
class AppRegistration:
    client_id: str
    object_id: str  # of the service principal: the `oid` of its app tokens
    secrets: list[str] = field(default_factory=list)
    identifier_uris: tuple[str, ...] = ()
    delegated_scopes: frozenset[str] | None = None


def find_app(apps: Mapping[str, AppRegistration], form: Mapping[str, str]) -> AppRegistration:
    """The registration the request's `client_id` names."""
    client_id = form.get("client_id", "")
    app = apps.get(client_id)
    if app is None:
        raise GrantError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory.",
        )
    return app


def authenticate_client(
    apps: Mapping[str, AppRegistration], form: Mapping[str, str]
) -> AppRegistration:
    """The registration whose client secret the request carries."""
    app = find_app(apps, form)
    if "client_secret" not in form:
        raise GrantError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    given = form["client_secret"].encode()
    if any(hmac.compare_digest(given, s.encode()) for s in app.secrets):
        return app
    raise GrantError(
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is "
        f"the client secret value, not the client secret ID, for a secret added to app "
        f"'{app.client_id}'.",
    )


def validate_user_assertion(
    assertion: str, app: AppRegistration, keys: SigningKeys, issuer: str, tenant: str
) -> dict[str, Any]:
    """The claims of the user token an on-behalf-of request exchanges."""
    try:
        kid = jwt.get_unverified_header(assertion).get("kid", "")
        key = keys.public_key(kid)
        if key is None:
            raise GrantError(
                400,
                "invalid_grant",
                50013,
                "Assertion failed signature validation. [Reason - The key was not found.]",
            )
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key,
            algorithms=["RS256"],
            audience=[app.client_id, *app.identifier_uris],
            options={"require": ["exp", "aud", "iss", "oid", "tid"]},
        )
    except jwt.ExpiredSignatureError:
        raise GrantError(
            400, "invalid_grant", 500133, "Assertion is not within its valid time range."
        ) from None
    except jwt.InvalidAudienceError:
        raise GrantError(
            400,
            "invalid_grant",
            50013,
            "Assertion audience does not match the Client app presenting the assertion.",
        ) from None
    except jwt.PyJWTError as err:
        raise GrantError(400, "invalid_grant", 50013, f"Assertion is invalid. {err}") from None
    if claims["tid"] != tenant or claims["iss"] not in (issuer, issuer.removesuffix("v2.0")):
        raise GrantError(400, "invalid_grant", 50013, "Assertion issuer is not this tenant.")
    return claims
