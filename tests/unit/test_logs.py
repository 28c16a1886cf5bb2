"""logging.level and logging.format applied to the root handler, and the request id."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.config.model import LogSettings
from gateway.observability import logs


@pytest.fixture
def installed():
    root = logging.getLogger()
    saved = (
        root.level,
        list(root.handlers),
        {n: logging.getLogger(n).level for n in logs.OWN_LOGGERS},
    )
    stream = io.StringIO()
    yield stream
    for handler in root.handlers:
        if isinstance(handler, logs.GatewayHandler):
            root.removeHandler(handler)
    root.setLevel(saved[0])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    assert root.handlers == saved[1]


def test_reconfigure_without_install_changes_nothing():
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    logs.reconfigure(LogSettings(level="debug", format="json"))
    assert (root.level, list(root.handlers)) == before


def test_levels_apply_to_the_gateway_and_aiohttp_not_to_libraries(installed):
    logs.install(LogSettings(level="debug", format="json"), installed)
    logging.getLogger("azdo_gateway.tokens").debug("gateway detail")
    logging.getLogger("msal.application").debug("library detail")
    logging.getLogger("aiohttp.server").debug("aiohttp detail")
    messages = [json.loads(line)["message"] for line in installed.getvalue().splitlines()]
    assert messages == ["gateway detail", "aiohttp detail"]
    logs.reconfigure(LogSettings(level="warning", format="json"))
    logging.getLogger("azdo_gateway").info("not shown")
    logging.getLogger("azdo_gateway").warning("shown")
    logging.getLogger("somelib").info("library info")
    logging.getLogger("somelib").warning("library warning")
    tail = [json.loads(line)["message"] for line in installed.getvalue().splitlines()[2:]]
    assert tail == ["shown", "library warning"]


def test_json_line_fields_request_id_and_exception(installed):
    logs.install(LogSettings(format="json"), installed)
    token = logs.REQUEST_ID.set("rid-7")
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("azdo_gateway").exception("failed: %s", "why")
    finally:
        logs.REQUEST_ID.reset(token)
    logging.getLogger("azdo_gateway").info("after")
    first, second = (json.loads(line) for line in installed.getvalue().splitlines())
    assert first["requestId"] == "rid-7" and first["message"] == "failed: why"
    assert first["level"] == "error" and first["logger"] == "azdo_gateway"
    assert "ValueError: boom\nsecond line" in first["exception"]
    assert "requestId" not in second and second["message"] == "after"


def test_text_lines_end_with_the_request_id(installed):
    logs.install(LogSettings(format="text"), installed)
    token = logs.REQUEST_ID.set("rid-8")
    logging.getLogger("azdo_gateway.authn").info("hello")
    logs.REQUEST_ID.reset(token)
    logging.getLogger("azdo_gateway.authn").info("bye")
    first, second = installed.getvalue().splitlines()
    assert first.endswith(" INFO azdo_gateway.authn: hello [request rid-8]")
    assert second.endswith(" INFO azdo_gateway.authn: bye")
