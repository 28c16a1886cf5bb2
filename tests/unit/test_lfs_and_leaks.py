"""gateway.proxy.lfs (batch answers' action credentials), gateway.proxy.leaks (the injected
credential kept from clients) and gateway.body_select (operations chosen by the body)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.body_select import choose, fields
from gateway.catalog import Catalog
from gateway.config.model import Config, GatewayConfig
from gateway.errors import BadRequest
from gateway.proxy import leaks, lfs
from gateway.proxy.rewrite import Rewriter

GW = "https://gw.example"
PAT = "upstream-pat-0123456789"
BASIC = "Basic " + base64.b64encode(f":{PAT}".encode()).decode()


def _answer(href: str, **obj: Any) -> dict[str, Any]:
    action = {"href": href, "header": {"authorization": "Basic abc", "X-Keep": "1"}}
    return {"objects": [{"oid": "1", "size": 1, "actions": {"download": action}, **obj}]}


def test_actions_on_the_gateway_lose_authorization_and_authenticated() -> None:
    doc = _answer(GW + "/o/p/_git/r.git/info/lfs/objects/1", authenticated=True)
    assert lfs.drop_action_credentials(doc, GW + "/")
    (obj,) = doc["objects"]
    assert obj["actions"]["download"]["header"] == {"X-Keep": "1"}
    assert "authenticated" not in obj
    assert not lfs.drop_action_credentials(doc, GW)  # nothing left to drop


@pytest.mark.parametrize(
    "doc",
    [
        _answer("https://blob.example/o/1", authenticated=True),  # elsewhere: keeps its header
        _answer(GW + ".evil.example/x"),
        {"objects": "no"},
        {"objects": [1, {"actions": []}, {"actions": {"download": "x"}}]},
        [],
        {"value": []},
    ],
)
def test_other_documents_are_left_alone(doc: Any) -> None:
    before = json.dumps(doc)
    assert not lfs.drop_action_credentials(doc, GW)
    assert json.dumps(doc) == before


def test_the_forms_of_a_credential() -> None:
    assert set(leaks.forms(BASIC)) == {
        BASIC.encode(),
        BASIC.partition(" ")[2].encode(),
        PAT.encode(),
    }
    assert leaks.forms("Bearer eyJ.abc.def") == (b"eyJ.abc.def", b"Bearer eyJ.abc.def")
    assert leaks.forms("Basic !!notbase64!!") == (b"!!notbase64!!", b"Basic !!notbase64!!")
    assert leaks.forms("Bearer short") == (b"Bearer short",)  # "short" alone is too short


def test_scrubbing_headers_documents_and_text() -> None:
    secrets = leaks.forms(BASIC)
    headers = CIMultiDict({"X-Echo": f"was {PAT}", "Content-Type": "application/json"})
    leaks.scrub_headers(headers, secrets)
    assert headers == {"Content-Type": "application/json"}
    repeated = CIMultiDict([("X-Echo", PAT), ("x-echo", "fine"), ("X-ECHO", BASIC), ("A", "b")])
    leaks.scrub_headers(repeated, secrets)
    assert list(repeated.items()) == [("A", "b")]
    doc = {"a": BASIC, PAT: 1, "b": [PAT, "keep", {"c": f"x{PAT}x"}], "d": "fine"}
    assert leaks.scrub_doc(doc, secrets)
    assert doc == {"b": ["keep", {}], "d": "fine"}
    assert leaks.scrub_bytes(f"<{BASIC}> {PAT}".encode(), secrets) == (
        b"<[removed by azdo-gateway]> [removed by azdo-gateway]"
    )


def _rewriter() -> Rewriter:
    hosts = {"main": "https://dev.azure.com"}
    gw = GatewayConfig.model_validate({"upstream": {"hosts": hosts}, "listen": {"public_url": GW}})
    return Rewriter(Config(path=Path("gateway.yaml"), gateway=gw, clients=(), routes=()))


LFS = "application/vnd.git-lfs+json"
BATCH_PATH = "/o/p/_git/r.git/info/lfs/objects/batch"


@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_the_rewriter_points_actions_at_the_gateway_without_their_credential(
    encoding: str,
) -> None:
    answer = _answer("https://dev.azure.com/o/p/_git/r.git/info/lfs/objects/1", authenticated=True)
    answer["objects"][0]["actions"]["download"]["header"]["Authorization"] = BASIC
    answer["objects"][0]["size"] = 12345678901234567890123  # numbers kept as written
    raw = json.dumps(answer).encode()
    raw = gzip.compress(raw) if encoding else raw
    out = _rewriter().rewrite_body(
        raw, content_encoding=encoding, content_type=LFS, path=BATCH_PATH
    )
    doc = json.loads(gzip.decompress(out) if encoding else out)
    (obj,) = doc["objects"]
    assert obj["actions"]["download"] == {
        "href": GW + "/o/p/_git/r.git/info/lfs/objects/1",
        "header": {"X-Keep": "1"},
    }
    assert "authenticated" not in obj and obj["size"] == 12345678901234567890123


def test_a_batch_answer_pointing_elsewhere_is_passed_through() -> None:
    raw = json.dumps(_answer("https://blob.example/1", authenticated=True)).encode()
    assert _rewriter().rewrite_body(raw, content_type=LFS, path=BATCH_PATH) is raw


@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_a_body_holding_the_credential_is_scrubbed(encoding: str) -> None:
    secrets = leaks.forms(BASIC)

    def scrub(body: bytes, content_type: str) -> bytes:
        sent = gzip.compress(body) if encoding else body
        headers = {"Content-Type": content_type, "Content-Encoding": encoding}
        out = leaks.scrub_body(sent, secrets, headers, 1 << 20)
        return gzip.decompress(out) if encoding else out

    doc = b'{"t": "%s", "n": 1.50, "keep": "x"}' % PAT.encode()
    assert scrub(doc, "application/json") == b'{"n":1.50,"keep":"x"}'
    assert scrub(b'{"t": "' + PAT.encode(), "application/json") == (
        b'{"t": "[removed by azdo-gateway]'
    )
    assert scrub(f"pat={PAT}".encode(), "text/plain") == b"pat=[removed by azdo-gateway]"
    plain = b'{"t": "nothing"}'
    assert leaks.scrub_body(plain, secrets, {"Content-Type": "application/json"}, 99) is plain


CATALOG = Catalog.builtin()
BATCH = CATALOG.match("main", "POST", "/o/p/_git/r/info/lfs/objects/batch")


@pytest.mark.parametrize(
    ("body", "operation"),
    [
        (b'{"operation": "upload", "objects": []}', "git.Lfs_BatchUpload"),
        (b'{"operation": " Upload "}', "git.Lfs_BatchUpload"),
        (b'{"operation": "download"}', "git.Lfs_Batch"),
        (b'{"objects": [{"operation": "upload"}]}', "git.Lfs_Batch"),  # not top level
        (b"{}", "git.Lfs_Batch"),
    ],
)
def test_the_body_selects_the_operation(body: bytes, operation: str) -> None:
    assert BATCH is not None
    variants = CATALOG.body_variants(BATCH.operation)
    chosen = choose(BATCH, variants, fields(body, variants, "x"))
    assert chosen.operation.id == operation
    assert (chosen.organization, chosen.project) == ("o", "p")


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", b"[1]", b'{"operation": ["upload"]}', b'{"operation":"a","operation":"b"}'],
)
def test_a_body_that_cannot_select_is_refused(body: bytes) -> None:
    assert BATCH is not None
    with pytest.raises(BadRequest):
        fields(body, CATALOG.body_variants(BATCH.operation), "x")
