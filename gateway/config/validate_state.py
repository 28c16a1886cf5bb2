"""Checks of the `state` section: a usable Redis URL and encryption key.

`validate_state(config)` returns every problem, located with `Config.sources`
like the other `validate_*` checks (`gateway.yaml:41: state.url: ...`). The
URL is never echoed: it may carry a password.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from gateway.config.model import Config, EncryptionKeyError
from gateway.config.sources import Problem

SCHEMES = ("redis", "rediss", "unix")


def _url_problem(url: str) -> str | None:
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        return f"not a valid URL ({err})"
    if parsed.scheme not in SCHEMES:
        shown = f"'{parsed.scheme}:'" if parsed.scheme else "no scheme"
        return (
            f"expected redis://[:password@]host:port/db, rediss:// (TLS) or "
            f"unix:///path/to/socket, got {shown}"
        )
    if parsed.scheme == "unix" and not parsed.path:
        return "expected unix:///path/to/redis.sock: no socket path"
    if parsed.scheme != "unix" and not parsed.hostname:
        return "expected redis://host:port/db: no host"
    return None


def validate_state(config: Config) -> list[Problem]:
    state = config.gateway.state
    out: list[Problem] = []
    if "state" in config.sources.broken_sections:
        return out
    at = config.sources.problem
    if state.backend != "redis":
        for key in ("url", "encryption_key", "encryption_key_file"):
            if getattr(state, key) is not None:
                message = "ignored with backend: memory"
                out.append(config.sources.warning(("state", key), message, "state_ignored"))
        return out
    if state.url is None or not state.url.get_secret_value():
        out.append(at(("state", "url"), "required with backend: redis (redis://host:6379/0)"))
    else:
        why = _url_problem(state.url.get_secret_value())
        if why:
            out.append(at(("state", "url"), why))
    if state.encryption_key is not None and state.encryption_key_file is not None:
        message = "set only one of encryption_key, encryption_key_file"
        out.append(at(("state", "encryption_key_file"), message))
        return out
    if state.encryption_key is None and state.encryption_key_file is None:
        message = (
            "encryption_key (or encryption_key_file) is required with backend: redis, "
            "so that tokens in Redis are encrypted: 32 bytes in base64, from "
            "`openssl rand -base64 32`"
        )
        out.append(at(("state", "backend"), message))
        return out
    inline = state.encryption_key is not None
    where = ("state", "encryption_key" if inline else "encryption_key_file")
    file = state.encryption_key_file
    if file is not None and not os.path.isfile(file):
        out.append(at(where, f"no such file: {file}"))
        return out
    try:
        state.key()
    except EncryptionKeyError as err:
        out.append(at(where, str(err)))
    except (OSError, UnicodeDecodeError) as err:
        out.append(at(where, f"cannot read {file}: {err}"))
    return out
