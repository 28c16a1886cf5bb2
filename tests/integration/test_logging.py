"""The gateway's own log lines on stderr: logging.format text|json, the request id, reload."""

from __future__ import annotations

import json
import re
import signal

import aiohttp
import yaml

from tests.fleet import GatewayProcess
from tests.harness import key_client_policy, new_key, write_config

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


async def failed_login(url: str, request_id: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            url + "/fabrikam/_apis/projects",
            headers={
                "Authorization": aiohttp.encode_basic_auth("", new_key()[0]),
                "X-Request-ID": request_id,
            },
        ) as r,
    ):
        assert r.status == 401


async def test_json_lines_carry_the_request_id_and_a_reload_switches_to_text(tmp_path):
    key, digest = new_key()
    gateway_yaml = {
        "upstream": {"hosts": {"main": "http://127.0.0.1:9"}},
        "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        "logging": {"level": "info", "format": "json"},
    }
    cfg = write_config(tmp_path, gateway_yaml, key_client_policy(digest, scopes=["vso.code"]))
    out = await GatewayProcess.start(cfg)
    url = out.url
    try:
        (banner,) = await out.wait_for(r"serving on")
        await failed_login(url, "log-test-json")
        (line,) = await out.wait_for(r"authentication failed.*log-test-json")
        entry = json.loads(line)
        assert entry["requestId"] == "log-test-json"
        assert (entry["level"], entry["logger"]) == ("info", "azdo_gateway.authn")
        assert entry["message"].startswith("authentication failed: unknown_key (source 127.0.0.1")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        assert key not in "\n".join(out.lines)
        for earlier in out.lines:  # every line so far is one JSON object
            record = json.loads(earlier)
            assert {"time", "level", "logger", "message"} <= record.keys()
        assert "requestId" not in json.loads(banner)  # outside a request, none

        gateway_yaml["logging"] = {"level": "info", "format": "text"}
        cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), **gateway_yaml}))
        out.proc.send_signal(signal.SIGHUP)
        (reloaded,) = await out.wait_for(r"configuration reloaded")
        assert TEXT_LINE.match(reloaded), reloaded
        await failed_login(url, "log-test-text")
        (line,) = await out.wait_for(r"authentication failed.*log-test-text")
        assert TEXT_LINE.match(line) and line.endswith(" [request log-test-text]"), line

    finally:
        code = await out.stop(20)
    assert code == 0, "\n".join(out.lines)
