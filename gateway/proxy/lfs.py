"""Git LFS batch answers: an action the gateway serves carries no credential of its own.

A batch answer (`POST .../info/lfs/objects/batch`, `application/vnd.git-lfs+json`,
https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md) lists, per object,
the actions to take (`download`, `upload`, `verify`), each with an `href` and the
`header`s to send with it:

    {"objects": [{"oid": "...", "size": 12, "authenticated": true,
                  "actions": {"upload": {"href": "https://...",
                                         "header": {"Authorization": "..."}}}}]}

Some LFS servers pre-authorize their actions that way. Once the rewriter has pointed an
action's `href` at the gateway, such a header would be sent to the gateway (which does
not accept it: 401) and could be the gateway's own upstream credential, which no client
may see. So for every action whose `href` now points at the gateway, `header.Authorization`
is dropped, and the object's `"authenticated": true` with it: the client authenticates the
follow-up call to the gateway as it did the batch call, and the gateway injects the upstream
credential there. Actions pointing elsewhere (blob storage) keep their headers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.proxy.rewrite.kinds import Page

# The answers read as batch answers (gateway.proxy.rewrite.kinds): their structure matters.
BATCH_TYPES = re.compile(r"^\s*application/vnd\.git-lfs\+json\s*(;|$)", re.I)
BATCH_PATHS = re.compile(r"/info/lfs/objects/batch$", re.I)


def is_batch_answer(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("objects"), list)


def rewrite_batch(doc: Any, page: Page) -> bool:
    """Point the actions' `href`s at the gateway and drop their credentials (in place)."""
    changed = False
    for action in _actions(doc):
        href = action.get("href")
        mapped = page.map_url(href) if isinstance(href, str) else None
        if mapped is not None:
            action["href"] = mapped
            changed = True
    return drop_action_credentials(doc, page.public) or changed


def _actions(doc: Any) -> list[dict[str, Any]]:
    if not is_batch_answer(doc):
        return []
    out: list[dict[str, Any]] = []
    for obj in doc["objects"]:
        actions = obj.get("actions") if isinstance(obj, dict) else None
        if isinstance(actions, dict):
            out.extend(a for a in actions.values() if isinstance(a, dict))
    return out


def drop_action_credentials(doc: Any, public_url: str) -> bool:
    """Drop `header.Authorization` from the actions of a batch answer whose `href` points
    at `public_url` (the gateway). True if anything was dropped."""
    if not is_batch_answer(doc):
        return False
    base = public_url.rstrip("/") + "/"
    changed = False
    for obj in doc["objects"]:
        actions = obj.get("actions") if isinstance(obj, dict) else None
        if not isinstance(actions, dict):
            continue
        for action in actions.values():
            if not isinstance(action, dict):
                continue
            href, header = action.get("href"), action.get("header")
            if not isinstance(href, str) or not href.startswith(base):
                continue
            if isinstance(header, dict):
                for name in [k for k in header if k.lower() == "authorization"]:
                    del header[name]
                    changed = True
            if obj.get("authenticated") is True:
                del obj["authenticated"]
                changed = True
    return changed
