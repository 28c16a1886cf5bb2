"""`azdo-gateway keys [-c gateway.yaml] [--expiring-within DAYS] [--json]`: every client's keys.

Lists each gateway key (client, key id, expiry date, days left), soonest to
expire first, keys without an expiry last. `--expiring-within DAYS` lists only
the keys that expire within DAYS (expired ones included). `--json` prints a
list of {"client", "id", "expires": "YYYY-MM-DD" or null, "daysLeft": int or
null}. Needs no secret (the configuration is loaded as `check --offline`
loads it); exit 0, or 1 when the configuration has errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

HELP = "list every client's gateway keys and when they expire"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml", help="default: gateway.yaml")
    p.add_argument(
        "--expiring-within",
        type=int,
        metavar="DAYS",
        help="only keys that expire within DAYS days (or have expired)",
    )
    p.add_argument("--json", action="store_true", help="print the keys as a JSON list")


def key_rows(config: Any, today: dt.date) -> list[dict[str, Any]]:
    """One row per key: client, id, expires (ISO date or None), daysLeft (or None)."""
    rows = []
    for client in config.clients:
        for key in client.api_keys:
            expires = key.expires
            if isinstance(expires, dt.datetime):
                expires = expires.date()
            rows.append(
                {
                    "client": client.name,
                    "id": key.id,
                    "expires": expires.isoformat() if expires else None,
                    "daysLeft": (expires - today).days if expires else None,
                }
            )
    never = 1 << 62
    rows.sort(key=lambda r: (never if r["daysLeft"] is None else r["daysLeft"], r["client"]))
    return rows


def run(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError
    from gateway.loading import load_checked

    try:
        config = load_checked(args.config, offline=True)
    except ConfigError as err:
        for problem in err.errors:
            print(problem, file=sys.stderr)
        return 1
    rows = key_rows(config, dt.datetime.now(dt.UTC).date())
    if args.expiring_within is not None:
        rows = [
            r for r in rows if r["daysLeft"] is not None and r["daysLeft"] <= args.expiring_within
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no keys" + (" expiring in that time" if args.expiring_within is not None else ""))
        return 0
    header = ("client", "key id", "expires", "days left")
    cells = [
        (
            r["client"],
            r["id"],
            r["expires"] or "never",
            "-"
            if r["daysLeft"] is None
            else (f"{r['daysLeft']} (expired)" if r["daysLeft"] < 0 else str(r["daysLeft"])),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(4)]
    for row in (header, *cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
