"""Every command, its output piped to a reader that has already gone (`... | head`).

The reader's end of a real pipe is closed before the command writes a byte, so every
write gets EPIPE: the command must end quietly, without a BrokenPipeError traceback
(or Python's "Exception ignored" note from the last flush at exit).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import VERBS
from tests.harness import new_key, pat_client_config, write_config
from tests.integration.ops_support import Upstream
from tests.processes import communicate, reap

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NOISE = ("Traceback", "BrokenPipe", "Exception ignored", "Broken pipe")


def gone_reader() -> tuple[int, int]:
    """A pipe whose reading end is already closed: (write end, 0)."""
    read, write = os.pipe()
    os.close(read)
    return write, 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZDO_GATEWAY")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    write, _ = gone_reader()
    try:
        return subprocess.run(  # noqa: S603 - our own command line
            [sys.executable, "-m", "gateway", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=_env(),
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)


def _audit(tmp_path: Path) -> Path:
    line = (
        '{"time": "2026-01-01T00:00:00Z", "client": "jenkins-legacy", "operation": '
        '"core.Projects_List", "method": "GET", "path": "/fabrikam/_apis/projects", '
        '"decision": "allowed", "requiredScopes": ["vso.project"], "status": 200}\n'
    )
    path = tmp_path / "audit.jsonl"
    path.write_text(line * 2000)
    return path


ONE_SHOT = {
    "--help": ["--help"],
    "--version": ["--version"],
    "check": ["check", "-c", "gateway.yaml"],
    "check --json": ["check", "--json", "-c", "gateway.yaml"],
    "keygen": ["keygen", "jenkins-legacy"],
    "keygen --json": ["keygen", "jenkins-legacy", "--json"],
    "explain": ["explain", "--client", "jenkins-legacy", "GET", "/fabrikam/_apis/projects"],
    "explain --json": ["explain", "--json", "--client", "jenkins-legacy", "GET", "/fabrikam"],
    "report": ["report", "-c", "gateway.yaml", "--audit", "{audit}"],
    "report --json": ["report", "-c", "gateway.yaml", "--audit", "{audit}", "--json"],
    "demo --help": ["demo", "--help"],
    "test": ["test", "-c", "gateway.yaml", "policies/tests/example.yaml"],
    "test --json": ["test", "--json", "-c", "gateway.yaml", "policies/tests/example.yaml"],
    "keys": ["keys", "-c", "gateway.yaml"],
    "keys --json": ["keys", "--json", "-c", "gateway.yaml"],
}
LONG_RUNNING = {"run", "demo"}  # tested below, as processes that keep running


def test_every_verb_is_covered() -> None:
    covered = {args[0] for args in ONE_SHOT.values()} | LONG_RUNNING
    missing = set(VERBS) - covered
    assert not missing, f"add a case for {sorted(missing)} to this file"


@pytest.mark.parametrize("name", sorted(ONE_SHOT))
def test_a_command_piped_to_a_gone_reader_ends_quietly(tmp_path: Path, name: str) -> None:
    audit = _audit(tmp_path)
    args = [a.replace("{audit}", str(audit)) for a in ONE_SHOT[name]]
    done = run_piped(args, ROOT)
    assert not any(n in done.stderr for n in NOISE), done.stderr
    assert done.returncode in (0, 1), (done.returncode, done.stderr)


def test_the_demo_piped_to_a_gone_reader_stops_quietly(tmp_path: Path) -> None:
    done = run_piped(["demo", "--port", "0", "--admin-port", "0"], tmp_path)
    assert done.returncode == 1
    assert not any(n in done.stderr for n in NOISE), done.stderr
    assert "cannot start" not in done.stderr  # not mistaken for a port already taken


async def test_run_with_the_audit_on_a_gone_reader_serves_and_stops_quietly(
    tmp_path: Path,
) -> None:
    upstream = await Upstream().start()
    key, digest = new_key()
    gateway_yaml, policies = pat_client_config(
        upstream.url, digest, scopes=["vso.project"], shutdown_grace_s=5
    )
    cfg = write_config(tmp_path, {**gateway_yaml, "audit": {"file": "-"}}, policies)
    write, _ = gone_reader()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "-c",
        str(cfg),
        stdout=write,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    os.close(write)
    try:
        assert proc.stderr is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"serving on" not in seen:
                line = await proc.stderr.readline()
                assert line, seen.decode()
                seen += line
        url = re.findall(r"serving on (http://[\d.]+:\d+)", seen.decode())[0]
        auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
        async with aiohttp.ClientSession() as s:
            for _ in range(3):  # every audit line goes to the closed pipe
                async with s.get(url + "/fabrikam/_apis/projects", headers=auth) as r:
                    assert r.status == 200
        os.kill(proc.pid, signal.SIGTERM)
        _, err = await communicate(proc, 30)
    finally:
        await reap(proc)
        await upstream.close()
    stderr = (seen + err).decode()
    assert "audit: cannot write -" in stderr  # said once, and the requests were served
    assert not any(n in stderr.replace("cannot write -: Broken pipe", "") for n in NOISE), stderr
    assert proc.returncode in (0, 1), stderr
