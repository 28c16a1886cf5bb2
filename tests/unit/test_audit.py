from __future__ import annotations

import asyncio
import json
import os
import select
import shutil

import pytest

from gateway.observability import audit as audit_mod
from gateway.observability.audit import AuditLog, record
from gateway.types import ClientIdentity, Decision, Match, RequestContext
from tests.samples import REPOSITORIES_LIST

OP = REPOSITORIES_LIST
FIELDS = {
    "time",
    "requestId",
    "source",
    "userAgent",
    "client",
    "authMethod",
    "operation",
    "method",
    "path",
    "organization",
    "project",
    "requiredScopes",
    "decision",
    "reason",
    "reportOnly",
    "credential",
    "upstreamStatus",
    "durationMs",
    "bytesIn",
    "bytesOut",
    "activityId",
}


def allowed_ctx() -> RequestContext:
    c = RequestContext(request_id="req-1", method="GET")
    c.path = "/fabrikam/Fiber/_apis/git/repositories"
    c.query = "api-version=7.1&token=secret-in-query"
    c.identity = ClientIdentity("ci", "entra", "oid-1", user_assertion="eyJ.secret.jwt")
    c.match = Match(OP, {"organization": "fabrikam", "project": "Fiber"}, "fabrikam", "Fiber")
    c.decision = Decision(True, None, ("vso.code",))
    c.credential, c.upstream_status, c.status = "build-sp", 200, 200
    c.activity_id, c.bytes_in, c.bytes_out = "a1b2", 0, 1234
    c.upstream_seconds = 0.0421
    return c


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        (None, None),
        ("git/2.43.0", "git/2.43.0"),
        ("curl/8.5\x1b[31m red", "curl/8.5\\x1b[31m red"),
        ("a\r\nfake: line\x00\x7f\x85", "a\\x0d\\x0afake: line\\x00\\x7f\\x85"),
        ("ü-agent 🚀", "ü-agent 🚀"),
        ("x" * 300, "x" * 253 + "..."),
    ],
)
def test_user_agent_is_bounded_and_escaped(sent, recorded):
    c = allowed_ctx()
    c.source, c.user_agent = "203.0.113.7", sent
    rec = record(c, 0.01, now=0)
    assert rec["userAgent"] == recorded and rec["source"] == "203.0.113.7"
    line = audit_mod.encode_line(rec)
    assert line.count(b"\n") == 1 and b"\x1b" not in line and b"\r" not in line


def test_record_has_design_fields_and_no_secrets():
    rec = record(allowed_ctx(), 0.05, now=0)
    assert FIELDS <= rec.keys()
    assert rec["time"] == "1970-01-01T00:00:00.000Z"
    assert rec["decision"] == "allow" and rec["reason"] is None
    assert rec["requiredScopes"] == ["vso.code"]
    assert (rec["organization"], rec["project"]) == ("fabrikam", "Fiber")
    assert rec["durationMs"] == 50.0 and rec["upstreamMs"] == 42.1
    text = json.dumps(rec)
    assert "secret" not in text and "eyJ" not in text


@pytest.mark.parametrize(
    "decision, error, expected",
    [
        (
            Decision(False, "missing_scope", ("vso.build_execute",)),
            "missing_scope",
            ("deny", "missing_scope", False),
        ),
        (
            Decision(True, "missing_scope", ("vso.code",), report_only=True),
            None,
            ("allow", "missing_scope", True),
        ),
        (None, "unknown_key", ("deny", "unknown_key", False)),
        (
            Decision(True, None, ("vso.code",)),
            "credential_unavailable",
            ("deny", "credential_unavailable", False),
        ),
    ],
)
def test_decision_reason_and_report_flag(decision, error, expected):
    c = allowed_ctx()
    c.decision, c.error_reason = decision, error
    rec = record(c, 0.001)
    assert (rec["decision"], rec["reason"], rec["reportOnly"]) == expected


def test_file_lines_and_copytruncate_and_rename_rotation(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_mod, "CHECK_EVERY_S", 0.0)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write({"n": 1})
    log.write({"n": 2})
    # logrotate copytruncate: copy, then truncate in place; O_APPEND writes go to offset 0
    shutil.copy(path, tmp_path / "audit.jsonl.1")
    os.truncate(path, 0)
    log.write({"n": 3})
    assert path.read_text() == '{"n":3}\n'
    assert (tmp_path / "audit.jsonl.1").read_text() == '{"n":1}\n{"n":2}\n'
    # rename rotation: the next write notices the path moved and reopens it
    os.rename(path, tmp_path / "audit.jsonl.2")
    log.write({"n": 4})
    assert path.read_text() == '{"n":4}\n'
    assert (tmp_path / "audit.jsonl.2").read_text() == '{"n":3}\n'
    log.close()


def test_explicit_reopen_after_rename(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write({"n": 1})
    os.rename(path, tmp_path / "old")
    log.reopen()  # what SIGHUP does
    log.write({"n": 2})
    assert path.read_text() == '{"n":2}\n'
    log.close()


def test_stdout_and_disabled(capsys):
    AuditLog("-").write({"a": "ü"})
    assert capsys.readouterr().out == '{"a":"ü"}\n'
    AuditLog(None).write({"a": 1})
    AuditLog("").write({"a": 1})
    assert capsys.readouterr().out == ""


def test_unwritable_destination_does_not_raise(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    os.close(log._fd)  # simulate a broken descriptor (disk gone)
    log.write({"n": 1})
    assert log.failures == 1
    log._fd = None


def test_line_is_the_record_as_compact_json():
    rec = record(allowed_ctx(), 0.05, now=0)
    line = audit_mod.encode_line(rec)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == rec
    assert line.decode() == json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n"


def test_undecodable_header_value_still_gives_one_valid_line(tmp_path):
    # aiohttp keeps header bytes that are not UTF-8 as lone surrogates
    c = allowed_ctx()
    c.upstream_rate_limit = {"retry-after": "5\udcff"}
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(record(c, 0.001))
    log.write({"n": "ü"})
    log.close()
    first, second = path.read_bytes().splitlines()
    assert json.loads(first)["upstreamRateLimit"] == {"retry-after": "5\udcff"}
    assert json.loads(second) == {"n": "ü"}


class _Pipe:
    """Stands for stdout: records each write that reaches the file descriptor."""

    def __init__(self) -> None:
        self.buffered = ""
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.buffered += text
        return len(text)

    def flush(self) -> None:
        if self.buffered:
            self.writes.append(self.buffered)
        self.buffered = ""


async def test_stdout_lines_of_one_turn_go_out_in_writes_a_pipe_takes_whole(monkeypatch):
    pipe = _Pipe()
    monkeypatch.setattr(audit_mod.sys, "stdout", pipe)
    log = AuditLog("-")
    entries = [{"n": i, "pad": "x" * 300} for i in range(40)] + [{"big": "y" * 9000}]
    for entry in entries:
        log.write(entry)
    assert pipe.writes == []  # collected until the loop turns
    await asyncio.sleep(0)
    assert len(pipe.writes) > 1
    for chunk in pipe.writes[:-1]:
        assert len(chunk.encode()) <= select.PIPE_BUF and chunk.endswith("\n")
    assert pipe.writes[-1] == json.dumps(entries[-1], separators=(",", ":")) + "\n"
    lines = "".join(pipe.writes).splitlines()
    assert [json.loads(x) for x in lines] == entries
    log.write({"last": True})
    log.close()  # what is still collected goes out on close
    assert pipe.writes[-1] == '{"last":true}\n'


def test_a_closed_stdout_loses_lines_without_raising(monkeypatch):
    pipe = _Pipe()

    def broken(text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    pipe.write = broken  # type: ignore[method-assign]
    monkeypatch.setattr(audit_mod.sys, "stdout", pipe)
    log = AuditLog("-")
    log.write({"n": 1})
    assert log.failures == 1
