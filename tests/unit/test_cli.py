"""The command line as a user runs it: the installed console script."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("azdo-gateway")


def test_version_prints_the_installed_distributions_version():
    done = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"azdo-gateway {version('azdo-gateway')}\n"
    assert version("azdo-gateway").count(".") >= 2  # X.Y.Z
