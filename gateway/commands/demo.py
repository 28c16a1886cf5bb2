"""`azdo-gateway demo`: run the gateway on this machine in front of built-in stand-ins for
Azure DevOps (with a real git repository) and Entra ID, with two sample clients, and print
ready-to-paste curl, git and SDK lines. Ctrl-C stops everything and removes its files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "try the gateway on this machine against built-in Azure DevOps and Entra ID stand-ins"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")
    p.add_argument(
        "--port", type=int, default=8080, help="gateway port (default 8080; 0 picks a free one)"
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=9090,
        help="metrics/health port (default 9090; 0 picks a free one)",
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
        help="run every printed example against the demo, report, and stop (exit 1 if any fails)",
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
                port=args.port,
                admin_port=args.admin_port,
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
