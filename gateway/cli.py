"""Command line: argument parsing only; each verb lives in gateway/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# verb -> module under gateway.commands (add a verb: add a module and a line here)
VERBS = {
    "run": "run",
    "check": "check",
    "keygen": "keygen",
    "explain": "explain",
    "test": "test",
    "keys": "keys",
    "report": "report",
    "demo": "demo",
}


def _version() -> str:
    """The installed distribution's version (its metadata, as pip shows it)."""
    try:
        return version("azdo-gateway")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    p = argparse.ArgumentParser(
        prog="azdo-gateway", description="Least-privilege reverse proxy for Azure DevOps."
    )
    p.add_argument("--version", action="version", version=f"azdo-gateway {_version()}")
    sub = p.add_subparsers(dest="verb", required=True)
    modules: dict[str, object] = {}
    for verb, name in VERBS.items():
        mod = importlib.import_module(f"gateway.commands.{name}")
        sp = sub.add_parser(verb, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(sp)
        modules[verb] = mod
    return p, modules


def _reader_gone() -> int:
    """The reader of our output left (`azdo-gateway ... | head`): stop quietly.

    What is still buffered goes nowhere (stdout now points at the null device, so
    the interpreter's last flush cannot fail either), and the exit status is 1,
    as Python's own documentation recommends for EPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser, modules = _parser()
        args = parser.parse_args(argv)
        result: int = modules[args.verb].run(args)  # type: ignore[attr-defined]
        sys.stdout.flush()  # a reader gone before the end shows here, not at exit
    except BrokenPipeError:
        return _reader_gone()
    return result
