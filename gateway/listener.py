"""The proxy's aiohttp server, and what it answers a request aiohttp cannot parse.

`ProxyServer` is aiohttp's low-level `web.Server` whose connections use
`ProxyRequestHandler`, aiohttp's `RequestHandler` with its `handle_error`
overridden (the hook aiohttp gives for the answer to a request that failed).

A request aiohttp's HTTP parser refuses (a control character or NUL in a
header, obs-fold, an over-long line, a bad chunk, a body framed two ways, ...)
never reaches the pipeline. aiohttp would log `Error handling request` with
the parser's message, which quotes the offending bytes (for a bad
`Authorization` header, the base64 of the client's key), and send that
message back as its text/plain 400 body. Here it is answered with DESIGN's
JSON error body (`bad_request`) and logged once at WARNING, both naming the
problem in words (`problem`) and never quoting what the client sent.

An exception that escaped the pipeline (the pipeline answers its own errors,
so this is a last resort) is logged once and answered as JSON 500
`internal_error`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from gateway.errors import BadRequest, GatewayError, InternalError
from gateway.observability.logs import REQUEST_ID
from gateway.request_ids import new_request_id

log = logging.getLogger("azdo_gateway.http")

# What each of aiohttp's parse errors means, for when its message tells no more.
_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is too long"),
    (http_exceptions.BadHttpMethod, "invalid method"),
    (http_exceptions.BadStatusLine, "invalid request line"),
    (http_exceptions.InvalidURLError, "invalid request target"),
    (http_exceptions.InvalidHeader, "invalid header"),
    (http_exceptions.TransferEncodingError, "invalid chunked body"),
    (http_exceptions.ContentLengthError, "invalid body length"),
)
# The parser's own reason comes first in its message ("Invalid header value
# char:\n\n  b'<the bytes>'"). Kept only when it reads as words: short ones,
# none as long as a token, a key or its base64 would be.
_REASON = re.compile(r"[A-Za-z][A-Za-z0-9 '.-]{0,79}")
_LONGEST_WORD = 20


def problem(exc: BaseException | None) -> str:
    """What is wrong with a request aiohttp refused, in words, quoting none of its bytes."""
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        reason = re.split(r"[:\n]", message, maxsplit=1)[0].strip()
        if _REASON.fullmatch(reason) and max(map(len, reason.split())) <= _LONGEST_WORD:
            return reason
    for kind, words in _KINDS:
        if isinstance(exc, kind):
            return words
    return "malformed request"


def _answer(err: GatewayError, request_id: str) -> web.Response:
    response = web.Response(
        status=err.status,
        body=err.to_json(request_id),
        content_type="application/json",
        headers={"X-Request-ID": request_id, **err.headers},
    )
    response.force_close()  # the connection's framing cannot be trusted any more
    return response


class ProxyRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering failed requests the gateway's way."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = new_request_id()  # as the pipeline makes them
        logged = REQUEST_ID.set(rid)
        try:
            if status >= 500:
                log.error(
                    "internal error answering a request from %s", request.remote, exc_info=exc
                )
                err: GatewayError = InternalError("internal error")
                err.status = status
            else:
                what = problem(exc)
                log.warning("refused a malformed request from %s: %s", request.remote, what)
                err = BadRequest(f"malformed HTTP request: {what}", reason="bad_request")
                err.status = status
        finally:
            REQUEST_ID.reset(logged)
        if request.writer.output_size > 0:
            # part of an answer is out: the only honest signal left is the cut
            raise ConnectionError("an answer was already started")
        return _answer(err, rid)


class ProxyServer(web.Server):
    """aiohttp's low-level server; each connection gets a `ProxyRequestHandler`."""

    def __call__(self) -> RequestHandler:
        options: dict[str, Any] = self._kwargs
        return ProxyRequestHandler(self, loop=self._loop, **options)
