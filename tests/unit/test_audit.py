from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import select
import shutil
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.observability import audit as audit_mod
from gateway.observability.audit import AuditLog, record
from gateway.types import ClientIdentity, Decision, Match, Operation, ProjectRef, RequestContext
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


# What record(), utc_ms() and user_agent() computed before they were tuned for
# speed, written the plain way: the tuned ones must give the same line, byte for byte.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain_utc_ms(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _plain_user_agent(value: str | None) -> str | None:
    if value is None:
        return None
    escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return escaped if len(escaped) <= 256 else escaped[:253] + "..."


def _plain_record(ctx: RequestContext, seconds: float, now: float) -> dict[str, Any]:
    identity, match, decision = ctx.identity, ctx.match, ctx.decision
    allowed: bool | None
    if decision is not None:
        allowed = decision.allowed and ctx.error_reason is None
        reason = ctx.error_reason or decision.reason
    else:
        allowed = False if ctx.error_reason else None
        reason = ctx.error_reason
    required = (
        decision.required_scopes
        if decision and decision.required_scopes
        else (match.operation.scopes if match else ())
    )
    return {
        "kind": "request",
        "time": _plain_utc_ms(now),
        "requestId": ctx.request_id,
        "source": ctx.source,
        "userAgent": _plain_user_agent(ctx.user_agent),
        "client": identity.client if identity else None,
        "authMethod": identity.auth_method if identity else None,
        "subject": identity.subject if identity else None,
        "operation": match.operation.id if match else None,
        "area": match.operation.area if match else None,
        "method": ctx.method,
        "effectiveMethod": ctx.effective_method or ctx.method,
        "host": ctx.host,
        "path": ctx.path or None,
        "organization": match.organization if match else None,
        "project": (ctx.project.name if ctx.project else None)
        or (match.project if match else None),
        "projectId": ctx.project.id if ctx.project else None,
        "requiredScopes": list(required),
        "decision": "allow" if allowed else "deny" if allowed is False else None,
        "reason": reason,
        "reportOnly": bool(decision and decision.report_only),
        "rule": decision.rule if decision else None,
        "credential": ctx.credential,
        "status": ctx.status,
        "upstreamStatus": ctx.upstream_status,
        "durationMs": round(seconds * 1000, 3),
        "upstreamMs": None
        if ctx.upstream_seconds is None
        else round(ctx.upstream_seconds * 1000, 3),
        "bytesIn": ctx.bytes_in,
        "bytesOut": ctx.bytes_out,
        "activityId": ctx.activity_id,
        "upstreamRateLimit": dict(ctx.upstream_rate_limit) or None,
    }


_TEXT = st.text(max_size=12)
_MAYBE = st.none() | _TEXT
_SCOPES = st.lists(st.sampled_from(["vso.code", "vso.build", "vso.project"]), max_size=3)
_OPERATIONS = st.builds(
    Operation,
    id=_TEXT,
    area=_TEXT,
    host=st.just("main"),
    method=st.just("GET"),
    template=st.just("/{organization}/_apis/x"),
    scopes=_SCOPES.map(tuple),
)
_CONTEXTS = st.builds(
    RequestContext,
    request_id=_TEXT,
    method=st.sampled_from(["GET", "POST", "BREW"]),
    source=_MAYBE,
    user_agent=st.none() | st.text(max_size=300),
    effective_method=st.sampled_from(["", "GET", "DELETE"]),
    host=_TEXT,
    path=_TEXT,
    identity=st.none()
    | st.builds(
        ClientIdentity,
        client=_TEXT,
        auth_method=st.sampled_from(["api_key", "entra", "certificate"]),
        subject=_TEXT,
        user_assertion=st.just("eyJ.secret"),
    ),
    match=st.none() | st.builds(Match, _OPERATIONS, st.just({}), _MAYBE, _MAYBE),
    project=st.none() | st.builds(ProjectRef, _MAYBE, _MAYBE),
    decision=st.none()
    | st.builds(Decision, st.booleans(), _MAYBE, _SCOPES.map(tuple), st.booleans(), _MAYBE),
    credential=_MAYBE,
    upstream_status=st.none() | st.integers(100, 599),
    upstream_seconds=st.none() | st.floats(0, 1e6),
    activity_id=_MAYBE,
    bytes_in=st.integers(0, 2**40),
    bytes_out=st.integers(0, 2**40),
    status=st.none() | st.integers(100, 599),
    error_reason=_MAYBE,
    upstream_rate_limit=st.dictionaries(_TEXT, _TEXT, max_size=3),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(_CONTEXTS, st.floats(0, 1e6), st.floats(0, 4e9))
def test_record_gives_the_line_the_plain_record_gives(ctx, seconds, now):
    plain = _plain_record(ctx, seconds, now)
    rec = record(ctx, seconds, now=now)
    assert list(rec.items()) == list(plain.items())  # the same fields in the same order
    assert audit_mod.encode_line(rec) == audit_mod.encode_line(plain)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(
    st.floats(0, 2**34)
    | st.integers(0, 2**30).map(lambda s: s + 0.9999996)  # rounds up to the next second
    | st.integers(0, 2**30 * 1000).map(lambda ms: ms / 1000 + 0.0009996)  # to the next ms
    | st.integers(0, 2**34 * 1000).map(lambda ms: ms / 1000)
    | st.floats(-1e9, 0)
)
def test_utc_ms_is_the_text_datetime_gives(t):
    assert audit_mod.utc_ms(t) == _plain_utc_ms(t)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.text(max_size=300) | st.text(alphabet=st.characters(max_codepoint=0xA0), max_size=300))
def test_user_agent_is_the_plain_escape_and_cut(value):
    assert audit_mod.user_agent(value) == _plain_user_agent(value)


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
