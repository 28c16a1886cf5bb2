"""On-behalf-of: exchange the caller's validated Entra ID token for an Azure
DevOps token for that same user (OAuth 2.0 jwt-bearer, requested_token_use=on_behalf_of).

Takes the user's assertion and the delegated scopes the client is granted
(`499b84ac-.../vso.code`, ...), so that Azure DevOps enforces them too.
Rejects (as `TokenAcquisitionError`) an answer whose token names a user other
than the one asked for: a token must never reach another user.
"""

from __future__ import annotations

from collections.abc import Iterable

import jwt

from gateway.tokens.base import AZURE_DEVOPS_RESOURCE, IssuedToken, TokenAcquisitionError
from gateway.tokens.msal_confidential import ConfidentialCredential

_OAUTH_SCOPE_PREFIX = AZURE_DEVOPS_RESOURCE + "/"


def delegated_scopes(granted: Iterable[str]) -> tuple[str, ...]:
    """The Entra scopes to ask for the policy scopes a client is granted."""
    scopes = sorted({s if "/" in s else _OAUTH_SCOPE_PREFIX + s for s in granted})
    return tuple(scopes) or (_OAUTH_SCOPE_PREFIX + ".default",)


def _claims(token: str) -> dict[str, object]:
    try:
        claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}  # not a JWT: nothing to cross-check
    return claims


class OnBehalfOfProvider(ConfidentialCredential):
    def acquire(self, scopes: tuple[str, ...], user_assertion: str | None = None) -> IssuedToken:
        if not user_assertion:
            raise TokenAcquisitionError(
                "no_user_assertion", "on-behalf-of needs the caller's Entra ID access token"
            )
        expected = _claims(user_assertion)
        token: IssuedToken = self._acquire_with(
            lambda app: app.acquire_token_on_behalf_of(user_assertion, list(scopes))
        )
        got = _claims(token.access_token)
        for claim in ("oid", "tid"):
            if claim in got and claim in expected and got[claim] != expected[claim]:
                raise TokenAcquisitionError(
                    "user_mismatch",
                    f"the identity provider answered with a token for another user ({claim})",
                )
        return token
