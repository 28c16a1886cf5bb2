"""Errors the gateway answers with itself.

GatewayError                      any answer the gateway produces instead of upstream's
├── BadRequest (400)              ambiguous or malformed request (reason ambiguous_path, ...)
├── Unauthenticated (401)         no or bad client credential; carries WWW-Authenticate
├── Denied (403)                  authenticated but not allowed by policy
├── TooManyRequests (429)         rate limit or brute-force slowdown; carries Retry-After
├── PayloadTooLarge (413)         body over the configured limit
├── UpstreamError (502)           upstream unreachable, or it rejected our credential
├── CredentialUnavailable (503)   no valid upstream token can be had right now
├── Overloaded (503)              the gateway sheds load
├── StateUnavailableError (503) shared state (Redis) down and state.on_error: closed
├── UpstreamTimeout (504)         upstream did not answer in time
└── InternalError (500)           a fault inside the gateway (logged with the request id)

Every error renders DESIGN's JSON body:
{"error", "reason", "requiredScopes", "operation", "requestId"} plus "source": "azdo-gateway",
so that users can tell a gateway answer from an Azure DevOps one, and "message" /
"typeKey" in Azure DevOps' own error shape, so that SDKs show the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from gateway.config.problems import Problem

# The 403 reasons that are decisions of the policy: a grant or a route rule can
# change them (what `report` proposes a fix for).
POLICY_REASONS = frozenset(
    {
        "no_matching_operation",
        "missing_scope",
        "organization_not_allowed",
        "project_not_allowed",
        "route_denied",
        "client_not_allowed_on_route",
        "soap_not_supported",
        "batch_not_allowed",
    }
)

# Machine-readable reasons. They double as the `reason` label of
# azdo_gateway_denied_total, so this set is closed.
REASONS = POLICY_REASONS | frozenset(
    {
        # 400
        "ambiguous_path",
        "bad_request",
        "method_override_not_allowed",
        # 401
        "unauthenticated",
        "malformed_authorization",
        "unknown_key",
        "key_expired",
        "pat_not_accepted",
        "invalid_token",
        "token_expired",
        # 403 (and POLICY_REASONS)
        "unknown_client",
        # 413 / 429 / 5xx
        "payload_too_large",
        "rate_limited",
        "too_many_concurrent_requests",
        "too_many_failed_authentications",
        "upstream_throttled",
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_credential_rejected",
        "bad_upstream_response",
        "credential_unavailable",
        "overloaded",
        "internal_error",
        "state_unavailable",
    }
)

WWW_AUTHENTICATE = 'Basic realm="azdo-gateway", Bearer'


class GatewayError(Exception):
    status = 500
    default_reason = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        required_scopes: tuple[str, ...] = (),
        operation: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.required_scopes = required_scopes
        self.operation = operation
        self.headers = dict(headers or {})

    def _retry_after(self, seconds: float) -> None:
        """Tell the client when to try again: whole seconds, rounded up, at least one."""
        self.retry_after = seconds
        self.headers["Retry-After"] = str(max(1, round(seconds + 0.499)))

    def body(self, request_id: str) -> dict[str, object]:
        body: dict[str, object] = {
            "error": self.message,
            "reason": self.reason,
            "requiredScopes": list(self.required_scopes),
            "operation": self.operation,
            "requestId": request_id,
            "source": "azdo-gateway",
        }
        if self.status != 401:
            # What Azure DevOps SDKs read from an error body (their WrappedException), so the
            # gateway's reason surfaces in the SDK's exception. A 401 keeps the SDKs' own
            # authentication error (tools such as `az devops` prompt for a new PAT on it).
            body["message"] = f"azdo-gateway: {self.message} (reason: {self.reason})"
            body["typeKey"] = "AzdoGatewayError"
        return body

    def to_json(self, request_id: str) -> bytes:
        return json.dumps(self.body(request_id)).encode()

    def to_text(self, request_id: str) -> bytes:
        """The same answer as plain text, for clients that show only that (git prints a
        text/plain error body as `remote: ...` lines)."""
        lines = [f"azdo-gateway: {self.message}", f"reason: {self.reason}"]
        if self.required_scopes:
            lines.append("required scopes (any one): " + ", ".join(self.required_scopes))
        if self.operation:
            lines.append(f"operation: {self.operation}")
        lines.append(f"request id: {request_id}")
        return ("\n".join(lines) + "\n").encode()


class BadRequest(GatewayError):
    status = 400
    default_reason = "bad_request"


class Unauthenticated(GatewayError):
    status = 401
    default_reason = "unauthenticated"

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)


class Denied(GatewayError):
    status = 403
    default_reason = "missing_scope"


class PayloadTooLarge(GatewayError):
    status = 413
    default_reason = "payload_too_large"


class TooManyRequests(GatewayError):
    status = 429
    default_reason = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self._retry_after(retry_after)


class UpstreamError(GatewayError):
    status = 502
    default_reason = "upstream_unreachable"


class CredentialUnavailable(GatewayError):
    status = 503
    default_reason = "credential_unavailable"

    def __init__(self, message: str, *, retry_after: float = 5, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self._retry_after(retry_after)


class Overloaded(GatewayError):
    status = 503
    default_reason = "overloaded"


class StateUnavailableError(GatewayError):
    status = 503
    default_reason = "state_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self._retry_after(retry_after)


class UpstreamTimeout(GatewayError):
    status = 504
    default_reason = "upstream_timeout"


class InternalError(GatewayError):
    """A fault inside the gateway: the client learns only that, and the request id."""

    status = 500
    default_reason = "internal_error"


class ConfigError(Exception):
    """Configuration could not be loaded.

    `problems` lists every one found (errors, warnings and notes, in file and
    line order); `errors`, `warnings` and `notes` are those of one severity.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        self.errors = tuple(p for p in self.problems if p.severity == "error")
        self.warnings = tuple(p for p in self.problems if p.severity == "warning")
        self.notes = tuple(p for p in self.problems if p.severity == "note")
        super().__init__("\n".join(map(str, self.errors)))
