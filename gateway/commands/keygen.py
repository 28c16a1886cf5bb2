"""`azdo-gateway keygen NAME`: print a new gateway key once, and the policy line to paste.

The key (`azgw_...`) is shown once and never stored: the policy holds only
its SHA-256 (hex SHA-256 of the key string exactly as the client sends it).
Paste the printed line under the client's `api_keys:`. `--json` prints
{"key", "id", "sha256"} (plus "expires" when given) for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import secrets
import sys

HELP = "print a new gateway key once, and the policy line with its hash"

_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name",
        metavar="NAME",
        help="what the key is for (usually the client name); starts the key id",
    )
    p.add_argument("--json", action="store_true", help='print {"key", "id", "sha256"} as JSON')
    p.add_argument(
        "--expires",
        metavar="DATE",
        type=_expires,
        help="last day the key works (YYYY-MM-DD, UTC), an ISO 8601 date-time,"
        " or a number of days from today (90d)",
    )


def _expires(text: str) -> dt.date | dt.datetime:
    text = text.strip()
    if m := re.fullmatch(r"(\d{1,5})d", text):
        return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=int(m.group(1)))
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD), an ISO 8601 date-time or a number of days (90d)"
        ) from None


def key_id(name: str, today: dt.date) -> str:
    """`NAME-YYYYMMDD-xxxx`: readable in logs and audit lines, unique enough to rotate."""
    stem = _ID_SAFE.sub("-", name).strip("-._")[:40] or "key"
    return f"{stem}-{today:%Y%m%d}-{secrets.token_hex(2)}"


def run(args: argparse.Namespace) -> int:
    from gateway.authn.api_key import key_sha256, new_key

    expires: dt.date | dt.datetime | None = args.expires
    today = dt.datetime.now(dt.UTC).date()
    if expires is not None:
        last = expires if not isinstance(expires, dt.datetime) else expires.date()
        if last < today:
            print(f"keygen: --expires {expires.isoformat()} is in the past", file=sys.stderr)
            return 2
    key = new_key()
    kid = key_id(args.name, today)
    digest = key_sha256(key)
    if args.json:
        doc: dict[str, str] = {"key": key, "id": kid, "sha256": digest}
        if expires is not None:
            doc["expires"] = expires.isoformat()
        print(json.dumps(doc))
        return 0
    line = f'- {{id: {kid}, sha256: "{digest}"'
    if expires is not None:
        line += f", expires: {expires.isoformat()}"
    line += "}"
    print(f"Key for {args.name} (shown once, store it now; the gateway keeps only its hash):")
    print()
    print(f"    {key}")
    print()
    print("Give it to the tool as the password of HTTP Basic authentication (any user name)")
    print("or as a Bearer token, wherever it used a PAT. Add this line under the client's")
    print("api_keys: in its policy file:")
    print()
    print(f"    {line}")
    return 0
