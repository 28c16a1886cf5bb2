"""Problems found in a configuration, typed from where they are found to every printer.

A `Problem` says where (file, line, key as written in that file), what
(`message`), how bad (`severity`) and which kind (`code`, stable, for
`acknowledge:` lists and for machines reading `check --json`):

- `error`: the configuration cannot be used; `check` exits 1, `run` and a
  reload refuse it.
- `warning`: valid but probably not what was meant; printed by `check`, logged
  on every start and reload unless acknowledged where it arises.
- `note`: something `check --offline` (and `azdo-gateway test`) could not
  verify, such as an environment variable that is not set where it runs.

`WARNINGS` lists every warning code with what it means; a client or route may
`acknowledge` any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PathKey = tuple[str | int, ...]
Severity = Literal["error", "warning", "note"]

# Warning codes: what each means. Acknowledged with `acknowledge: [code, ...]`
# on the client or route the warning is about.
WARNINGS: dict[str, str] = {
    "high_privilege_scope": "a client is granted a scope that can administer or delete",
    "unused_scope": "a granted scope no catalog operation needs: the grant has no effect",
    "route_matches_nothing": "a route rule matches no operation in the catalog",
    "route_allows_every_client": "an `allow: true` rule names no clients",
    "no_scopes": "a client grants no scopes: only route rules can allow its requests",
    "no_authentication": "a client has no api_keys, entra or certificates",
    "no_organizations": "a client's `organizations` is empty: it may reach none",
    "key_expired": "an API key's `expires` date has passed",
    "key_expiring": "an API key expires within `keys.expiry_warning_days`",
    "body_limit_above_ceiling": "a body_bytes class is above `max_body_bytes`",
    "empty_secret": "a secret is empty (often: its environment variable is not set)",
    "inline_secret": "a secret is written in the file instead of ${ENV} or a *_file",
    "unused_credential": "a credential no client uses",
    "empty_file": "a policy file holds nothing",
    "no_clients": "no clients are defined: every request is denied",
    "state_ignored": "a `state` setting that `backend: memory` does not use",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth a warning, or a note) in the configuration."""

    file: str  # as shown to the user (relative to the working directory when under it)
    line: int | None  # 1-based; None when the element is not written in the file
    key: str  # formatted key, e.g. clients[2].credential; "" for the file as a whole
    message: str
    severity: Severity = "error"
    code: str = "invalid"
    # Where in `Config` the problem is ("clients", 4, ...): which client or route
    # may acknowledge it. Not shown; () when it is about no element.
    path: PathKey = field(default=(), compare=False)

    @property
    def warning(self) -> bool:
        return self.severity == "warning"

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        """The problem as `check --json` prints it."""
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "code": self.code,
            "severity": self.severity,
        }


def same_place(a: str, b: str) -> bool:
    """One key is the other, or inside it (routes[2].match.method[1] and routes[2].match.method)."""
    short, long = sorted((a, b), key=len)
    return bool(short) and (long == short or long.startswith((short + ".", short + "[")))
