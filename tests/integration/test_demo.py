"""`azdo-gateway demo` as a user runs it: a subprocess whose printed curl, git and SDK
lines (and the README's examples) work, and that Ctrl-C stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.processes import communicate, start_demo, wait

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("curl") and shutil.which("git")),
        reason="runs the printed curl and git lines",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
READY = "Press Ctrl-C to stop."
EXPECT = {
    "An Entra ID user": "200",
    "Allowed": "200",
    "Denied": "403",
    "No key": "401",
    "Metrics": "200",
    "Releases": "200",
    "The repository list": "200",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "AZURE_DEVOPS_CACHE_DIR": str(tmp_path / "sdk-cache"),
        "TMPDIR": str(tmp_path),  # where the demo keeps its audit trail
        "LC_ALL": "C",
        **extra,
    }


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await communicate(proc, 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def _curl(
    line: str, env: dict[str, str], cwd: Path, *, shell: bool = False
) -> tuple[str, str]:
    """Run a curl line; return (status code, body)."""
    if shell:
        argv = ["bash", "-c", line + " -o /dev/stdout -w '\\n%{http_code}'"]
    else:
        argv = [*shlex.split(line), "-w", "\n%{http_code}"]
    rc, out = await _run(argv, env, cwd)
    assert rc == 0, out
    body, _, code = out.rpartition("\n")
    return code, body


async def test_demo_prints_lines_that_work_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = await start_demo(env=env, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    printed: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert raw, "demo exited early: " + (await proc.stderr.read()).decode()
            line = raw.decode().rstrip("\n")
            printed.append(line)
            if line == READY:
                break
        text = "\n".join(printed)
        assert "STAND-IN" in text
        gw = re.search(r"^  gateway\s+(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
        workdir = Path(re.search(r"^  config\s+(\S+)", text, re.M).group(1)).parent  # type: ignore[union-attr]
        assert workdir.is_dir()
        exported = dict(
            kv.split("=", 1) for kv in re.search(r"^  export (.+)$", text, re.M).group(1).split()
        )  # type: ignore[union-attr]
        assert exported["GW"] == gw

        # every printed curl line, with the outcome its comment announces
        title = ""
        ran = 0
        for line in printed:
            if line.startswith("# "):
                title = line[2:]
            elif line.startswith("curl "):
                expected = next(v for k, v in EXPECT.items() if title.startswith(k))
                code, body = await _curl(line, env, tmp_path)
                assert code == expected, (title, body)
                if title.startswith("Denied"):
                    assert '"reason": "missing_scope"' in body and "vso.build_execute" in body
                if title.startswith("Metrics"):
                    assert "azdo_gateway_requests_total" in body
                if title.startswith("An Entra ID user"):
                    assert line.startswith(
                        f'curl -sS -H "Authorization: Bearer {exported["USER_TOKEN"]}" '
                    )
                    assert "Fabrikam-Fiber" in body
                ran += 1
        assert ran >= 7

        # the git clone line
        clone = next(line for line in printed if line.startswith("git clone "))
        rc, out = await _run([*shlex.split(clone), str(tmp_path / "clone")], env, tmp_path)
        assert rc == 0, out
        assert (tmp_path / "clone" / "README.md").is_file()

        # the SDK line as printed: with the demo's interpreter, which has the SDK here
        (sdk,) = [line for line in printed if " -c 'from azure.devops" in line]
        assert shlex.split(sdk)[0] == sys.executable
        assert "(this Python has the SDK)" in text
        rc, out = await _run(shlex.split(sdk), env, tmp_path)
        assert rc == 0, out
        assert "['Fabrikam-Fiber', 'fiber-docs']" in out

        # demo --check beside the running demo: its own (free) ports, each example listed
        rc, out = await _run([sys.executable, "-m", "gateway", "demo", "--check"], env, tmp_path)
        assert rc == 0, out
        check_gw = re.search(r"^  gateway\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        assert check_gw != gw and not check_gw.endswith(":8080")
        listed = re.findall(r"^(ok|FAILED|skipped) +(.+)$", out, re.M)
        assert [mark for mark, _ in listed] == ["ok"] * len(listed)
        assert len(listed) == ran + 2  # every curl example, the git clone and the SDK
        assert out.rstrip().endswith("demo check: ok")

        # the README's examples, with the variables the demo's export line sets
        readme = (ROOT / "README.md").read_text()
        block = readme.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
        readme_env = {**env, **exported}
        codes = []
        for line in block.splitlines():
            if line.startswith("curl "):
                codes.append((await _curl(line, readme_env, tmp_path, shell=True))[0])
            elif line.startswith("git clone "):
                rc, out = await _run(["bash", "-c", line + " readme-clone"], readme_env, tmp_path)
                assert rc == 0, out
        assert codes == ["200", "403", "200", "200", "200"]
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)  # no Process.send_signal(): see reap()
        rc = await wait(proc, 30)
    rest = (await proc.stdout.read()).decode()
    errors = (await proc.stderr.read()).decode()
    assert rc == 0, errors
    assert "stopping the demo" in rest
    assert "Traceback" not in errors
    assert not workdir.exists()  # its temporary files are gone ...

    # ... but the audit trail, where the demo said, for the README's report step
    audit = Path(exported["AUDIT"])
    assert f"audit trail kept: {audit}" in rest
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    user = [a for a in lines if a["client"] == "developers"]
    assert user and all(
        (a["authMethod"], a["credential"], a["status"]) == ("entra", "gateway-app", 200)
        for a in user
    )
    report = readme.split("Its audit trail stays", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    (command,) = [line for line in report.splitlines() if line.strip()]
    bin_dir = str(Path(sys.executable).parent)  # where azdo-gateway is installed
    report_env = {**readme_env, "PATH": bin_dir + os.pathsep + env["PATH"]}
    rc, out = await _run(["bash", "-c", command], report_env, tmp_path)
    assert rc == 0, out
    for client in ("legacy-reader", "build-bot", "developers"):
        assert client in out, out


async def test_demo_check_runs_its_examples(tmp_path: Path) -> None:
    rc, out = await _run(
        [sys.executable, "-m", "gateway", "demo", "--check", "--port", "0", "--admin-port", "0"],
        _env(tmp_path),
        tmp_path,
    )
    assert rc == 0, out
    assert out.rstrip().endswith("demo check: ok")
    assert "Traceback" not in out and "Unknown child process" not in out
    assert READY not in out
