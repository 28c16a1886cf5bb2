"""Stage 2c: an operation chosen by its request body.

A few Azure DevOps calls say what they do in their body, not their path: a Git LFS
batch request (`POST .../info/lfs/objects/batch`) is a download or an upload
negotiation by its `"operation"` field. The catalog lists such alternatives with
`body:` (`Catalog.body_variants`). For a request matching an operation that has
them, this stage reads the body (at most `MAX_BYTES`) before the policy decides,
keeps it under `PREREAD` for the forwarder, which sends it upstream unchanged,
and replaces the match's operation with the alternative the body selects.

Rejects, before anything reaches upstream: a body over `MAX_BYTES` (413
`payload_too_large`); a compressed body, one that is not a JSON object, a
selecting field that is not text or is given twice (400 `bad_request`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.types import Match, Operation, RequestContext

MAX_BYTES = 64 * 1024
# The body read here, sent upstream by the forwarder instead of reading the request again.
PREREAD = web.RequestKey("preread_body", bytes)


async def select(
    request: web.BaseRequest, ctx: RequestContext, match: Match, variants: tuple[Operation, ...]
) -> None:
    """Read the body and choose among `variants`, the alternatives of the matched operation."""
    what = f"{match.operation.id}: the request body"
    body = await read_bounded(request, MAX_BYTES, what)
    request[PREREAD] = body
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise BadRequest(f"{what} must not be compressed: the gateway reads it to authorize it")
    ctx.match = choose(match, variants, fields(body, variants, what))


async def read_bounded(request: web.BaseRequest, limit: int, what: str) -> bytes:
    too_large = PayloadTooLarge(
        f"{what} is larger than {limit // 1024} KiB; the gateway reads it to authorize it"
    )
    if (request.content_length or 0) > limit:
        raise too_large
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.readany()
        except Exception as err:  # the client's side broke
            raise BadRequest(f"reading the request body failed: {err}") from err
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def fields(body: bytes, variants: tuple[Operation, ...], what: str) -> dict[str, str]:
    """The top-level fields the variants select on, lower case, stripped."""
    names = {name for op in variants for name, _ in op.body}
    seen: dict[str, str] = {}
    try:
        doc = json.loads(body, object_pairs_hook=_top_level_pairs(names, seen, what))
    except (ValueError, RecursionError):
        raise BadRequest(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} is not a JSON object")
    return seen


def _top_level_pairs(names: set[str], seen: dict[str, str], what: str) -> Any:
    """An object_pairs_hook that records the selecting fields of the outermost object.
    json calls it innermost first, so the outermost object is the last call."""

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, str] = {}
        for key, value in items:
            if key not in names:
                continue
            # SECURITY: the server reads one of two equal keys; which one is not ours to guess.
            if key in found:
                raise BadRequest(f"{what} gives {key!r} more than once")
            if not isinstance(value, str):
                raise BadRequest(f"{what}: {key!r} must be text")
            # SECURITY: Azure DevOps parses such values ignoring case and surrounding blanks.
            found[key] = value.strip().lower()
        seen.clear()
        seen.update(found)
        return dict(items)

    return hook


def choose(match: Match, variants: tuple[Operation, ...], given: dict[str, str]) -> Match:
    for op in variants:
        if all(given.get(name) == value.lower() for name, value in op.body):
            return replace(match, operation=op)
    return match
