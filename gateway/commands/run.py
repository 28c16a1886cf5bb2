"""`azdo-gateway run`: serve the gateway."""

from __future__ import annotations

import argparse

HELP = "serve the gateway"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help=(
            "worker processes sharing the port (default: one per CPU this process may"
            " use: its affinity mask and its container's CPU quota)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    from gateway.server import serve

    return serve(args.config, workers=args.workers)
