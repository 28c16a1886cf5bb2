"""The process's log lines on stderr: `logging.level` and `logging.format`.

Takes the `logging` settings of gateway.yaml. `install()` puts one handler on
the root logger (the first time) and sets its format and the levels;
`reconfigure()` applies new settings to that handler after a reload, and does
nothing in a process where `install()` never ran (an embedding application or
a test keeps its own logging).

- `text`: `2026-11-25 09:12:03,118 INFO azdo_gateway: message`, and
  `[request <id>]` at the end while a request is being handled;
- `json`: one object per line, `{"time", "level", "logger", "message"}`, plus
  `requestId` while a request is being handled (the pipeline sets
  `REQUEST_ID`) and `exception` (the formatted traceback) when there is one.

`level` applies to the gateway's own loggers and aiohttp's; other libraries
stay at `info` or above even at `debug` (MSAL's and urllib3's debug output
describes token requests). aiohttp's access log is not used: the audit trail
records every request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import TextIO

from gateway.config.model import LogSettings

# The id of the request the current task is handling (set by the pipeline).
REQUEST_ID: ContextVar[str | None] = ContextVar("azdo_gateway_request_id", default=None)

OWN_LOGGERS = ("azdo_gateway", "aiohttp")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = REQUEST_ID.get()
        return f"{text} [request {rid}]" if rid else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record; newlines in a message stay inside its string."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
            + f".{int(t * 1000) % 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid:
            entry["requestId"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `install()` adds (found again by its type on reload)."""


def _ours() -> GatewayHandler | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, GatewayHandler):
            return handler
    return None


def install(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Log to stderr (or `stream`) as `settings` say, from now on."""
    handler = _ours()
    if handler is None:
        handler = GatewayHandler(stream or sys.stderr)
        logging.getLogger().addHandler(handler)
    _apply(handler, settings)


def reconfigure(settings: LogSettings) -> None:
    """Apply reloaded settings, if this process's logging is the gateway's."""
    handler = _ours()
    if handler is not None:
        _apply(handler, settings)


def _apply(handler: GatewayHandler, settings: LogSettings) -> None:
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    level = LEVELS[settings.level]
    root = logging.getLogger()
    root.setLevel(max(level, logging.INFO))  # libraries: info at most
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
