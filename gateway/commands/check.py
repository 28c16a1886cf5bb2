"""`azdo-gateway check`: validate configuration and policies, exit 1 on error."""

from __future__ import annotations

import argparse
import sys

HELP = "validate configuration and policies (exit 1 on error)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml")


def run(args: argparse.Namespace) -> int:
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
