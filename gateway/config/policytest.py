"""The policy test file of `azdo-gateway test`, as typed models.

```yaml
tests:
  - name: jenkins clones its repository
    client: jenkins-legacy                      # or key: ..., or entra: {appid: ...}
    request: GET https://dev.azure.com/fabrikam/Fabrikam-Fiber/_git/app/info/refs
    expect: allow                               # or deny, or {decision: deny, reason: ...}
```

Unknown keys are errors, as in the configuration; the loader reports them
with file, line and key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from gateway.config.messages import did_you_mean
from gateway.config.model import Model
from gateway.errors import REASONS

Decision = Literal["allow", "deny"]
_REQUEST = re.compile(r"^\s*(?P<method>[A-Za-z]+)\s+(?P<url>\S+)\s*$")


class EntraClaims(Model):
    """The claims of an Entra ID token the gateway has validated (no token is made)."""

    appid: str | None = None  # the calling application (`appid`, or `azp` in v2 tokens)
    oid: str | None = None  # the object id of the user or service principal
    groups: tuple[str, ...] = ()  # group object ids

    @model_validator(mode="after")
    def _something(self) -> EntraClaims:
        if not (self.appid or self.oid or self.groups):
            raise ValueError("set at least one of appid, oid, groups")
        return self


class Expectation(Model):
    decision: Decision
    # e.g. missing_scope; for `allow`, report mode's would-be reason
    reason: str | None = Field(None, json_schema_extra={"enum": [*sorted(REASONS), None]})
    operation: str | None = None  # the catalog operation id, e.g. git.Repositories_List

    @field_validator("reason")
    @classmethod
    def _known_reason(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONS:
            guess = did_you_mean(value, REASONS)
            hint = f"did you mean '{guess}'? " if guess else ""
            raise ValueError(
                f"unknown reason '{value}' ({hint}a reason the gateway answers with, "
                "e.g. missing_scope, route_denied, unknown_key)"
            )
        return value


class PolicyTest(Model):
    name: str = Field(min_length=1)
    client: str | None = None  # the policy client, by name
    key: str | None = None  # or a gateway key as the tool sends it (use ${ENV})
    entra: EntraClaims | None = None  # or the claims of an Entra ID token
    request: str  # "METHOD URL"; the URL as the tool calls Azure DevOps or the gateway
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. X-HTTP-Method-Override
    # allow, deny, or {decision, reason, operation}; the short form is read as the long one
    expect: Annotated[
        Expectation,
        BeforeValidator(lambda v: {"decision": v} if isinstance(v, str) else v),
        WithJsonSchema({"anyOf": [{"enum": ["allow", "deny"]}, Expectation.model_json_schema()]}),
    ]

    @field_validator("request")
    @classmethod
    def _request(cls, value: str) -> str:
        if not _REQUEST.match(value):
            raise ValueError(
                f"expected 'METHOD URL', e.g. 'GET https://dev.azure.com/fabrikam/_apis/projects',"
                f" got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _one_caller(self) -> PolicyTest:
        given = [k for k in ("client", "key", "entra") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of client, key, entra (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def method(self) -> str:
        m = _REQUEST.match(self.request)
        assert m is not None
        return m["method"].upper()

    @property
    def url(self) -> str:
        m = _REQUEST.match(self.request)
        assert m is not None
        return m["url"]

    @property
    def expectation(self) -> Expectation:
        return self.expect


class PolicyTestFile(Model):
    tests: tuple[PolicyTest, ...] = Field(min_length=1)
