"""Command line: argument parsing only; each verb calls into its module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="azdo-gateway", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    run = sub.add_parser("run", help="serve the gateway")
    run.add_argument("-c", "--config", default="gateway.yaml")
    run.add_argument("--workers", type=int, default=1)

    check = sub.add_parser("check", help="validate configuration and policies")
    check.add_argument("-c", "--config", default="gateway.yaml")

    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "run":
        from gateway.server import serve

        return serve(args.config, workers=args.workers)
    if args.verb == "check":
        from gateway.config.load import load
        from gateway.errors import ConfigError

        try:
            cfg = load(args.config)
        except ConfigError as err:
            for problem in err.problems:
                print(problem, file=sys.stderr)
            return 1
        print(f"{cfg.path}: ok ({len(cfg.clients)} clients)")
        return 0
    return 2
