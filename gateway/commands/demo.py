"""`azdo-gateway demo`: run the gateway on this machine in front of built-in stand-ins for
Azure DevOps (with a real git repository) and Entra ID, with two sample clients, and print
ready-to-paste curl, git and SDK lines for each way in (gateway keys, an Entra ID user's
token exchanged on-behalf-of). Ctrl-C stops everything and removes its files but the audit
trail, which `azdo-gateway report --audit FILE` reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "try the gateway on this machine against built-in Azure DevOps and Entra ID stand-ins"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="gateway port (default 8080, with --check a free one; 0 picks a free one)",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="metrics/health port (default 9090, with --check a free one; 0 picks a free one)",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write {gateway, admin, keys} as JSON here once everything is up",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help=(
            "run every printed example against the demo, list each as ok or FAILED, and stop"
            " (exit 1 if any fails); on free ports, so it can run beside a running demo"
        ),
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gateway.demo.run import serve_demo

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(
            serve_demo(
                host=args.host,
                port=_port(args.port, 8080, args.check),
                admin_port=_port(args.admin_port, 9090, args.check),
                check_only=args.check,
                ready_file=args.ready_file,
                out=sys.stdout,
            )
        )
    except BrokenPipeError:
        raise  # the reader of the output left: the command line ends quietly
    except OSError as err:
        print(
            f"azdo-gateway demo: cannot start: {err}\n"
            "(is the port taken? try --port 0 --admin-port 0 for free ones)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0


def _port(given: int | None, default: int, check: bool) -> int:
    """The port asked for; else 0 (a free one) for --check, which must not collide with a
    demo already running, and the usual one otherwise."""
    if given is not None:
        return given
    return 0 if check else default
