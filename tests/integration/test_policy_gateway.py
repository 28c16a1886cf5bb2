"""Policy decisions through a running gateway: the 403 body, route rules, report mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import new_key


async def start(make_fake_azdo: Any, make_gateway: Any) -> tuple[Any, Any, dict[str, str]]:
    fake = await make_fake_azdo()
    keys: dict[str, str] = {}
    clients = []
    for name, scopes, extra in (
        ("reader", ["vso.code"], {}),
        ("fiber", ["vso.code_write"], {"projects": ["fabrikam/Fiber"]}),
        ("trial", ["vso.code"], {"mode": "report"}),
        ("syncer", ["vso.work_write"], {}),
    ):
        key, digest = new_key()
        keys[name] = key
        clients.append(
            {
                "name": name,
                "credential": "server",
                "scopes": scopes,
                "api_keys": [{"id": f"{name}-k", "sha256": digest}],
                **extra,
            }
        )
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url, "vsrm": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        {
            "clients.yaml": {
                "clients": clients,
                "routes": [
                    {
                        "name": "no-repo-deletes",
                        "deny": True,
                        "match": {
                            "method": "DELETE",
                            "path": "/{organization}/{project}/_apis/git/repositories/{id}",
                        },
                    },
                    {
                        "name": "sync-batch",
                        "allow": True,
                        "clients": ["syncer"],
                        "match": {"method": "POST", "path": "/{organization}/_apis/wit/$batch"},
                    },
                ],
            }
        },
    )
    return fake, gw, keys


async def call(gw: Any, key: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": aiohttp.encode_basic_auth("", key)}
    async with aiohttp.ClientSession() as s, s.request(method, gw.url + path, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_denials_carry_reason_scopes_and_operation(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    status, body = await call(
        gw, keys["reader"], "POST", "/fabrikam/Fiber/_apis/git/repositories/r1/pushes"
    )
    assert status == 403
    assert {
        k: body[k]
        for k in ("error", "reason", "requiredScopes", "operation", "requestId", "source")
    } == {
        "error": "git.Pushes_Create needs vso.code_write; client 'reader' is granted vso.code",
        "reason": "missing_scope",
        "requiredScopes": ["vso.code_write"],
        "operation": "git.Pushes_Create",
        "requestId": body["requestId"],
        "source": "azdo-gateway",
    }
    status, body = await call(gw, keys["fiber"], "GET", "/fabrikam/Other/_apis/git/repositories")
    assert (status, body["reason"]) == (403, "project_not_allowed")
    status, body = await call(
        gw, keys["fiber"], "DELETE", "/fabrikam/Fiber/_apis/git/repositories/r1"
    )
    assert (status, body["reason"]) == (403, "route_denied")
    status, body = await call(gw, keys["reader"], "POST", "/fabrikam/_apis/wit/$batch")
    assert (status, body["reason"]) == (403, "client_not_allowed_on_route")
    status, body = await call(gw, keys["reader"], "GET", "/fabrikam/_apis/no/such/api")
    assert (status, body["reason"], body["operation"]) == (403, "no_matching_operation", None)
    assert fake.seen == []
    status, _ = await call(gw, keys["syncer"], "POST", "/fabrikam/_apis/wit/$batch")
    assert status == 200
    status, _ = await call(
        gw, keys["fiber"], "POST", "/fabrikam/Fiber/_apis/git/repositories/r1/pushes"
    )
    assert status == 200
    assert [(s.method, s.path) for s in fake.seen] == [
        ("POST", "/fabrikam/_apis/wit/$batch"),
        ("POST", "/fabrikam/Fiber/_apis/git/repositories/r1/pushes"),
    ]


async def test_report_mode_forwards_and_records_the_would_be_denial(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> None:
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    status, _ = await call(gw, keys["trial"], "DELETE", "/fabrikam/Fiber/_apis/git/repositories/r1")
    assert status == 200
    status, body = await call(gw, keys["trial"], "POST", "/fabrikam/_ws/ClientService.asmx")
    assert (status, body["reason"]) == (403, "soap_not_supported")
    assert [(s.method, s.path) for s in fake.seen] == [
        ("DELETE", "/fabrikam/Fiber/_apis/git/repositories/r1")
    ]
    await gw.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines() if x]
    forwarded = [x for x in lines if x.get("status") == 200]
    assert len(forwarded) == 1
    line = forwarded[0]
    assert (
        line["client"],
        line["operation"],
        line["decision"],
        line["reportOnly"],
        line["reason"],
        line["rule"],
    ) == ("trial", "git.Repositories_Delete", "allow", True, "route_denied", "no-repo-deletes")


async def test_a_form_without_optional_segments_is_the_same_operation(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    fake, gw, keys = await start(make_fake_azdo, make_gateway)
    # the organization-wide form of git.Repositories_List: outside every project
    status, body = await call(gw, keys["fiber"], "GET", "/fabrikam/_apis/git/repositories")
    assert (status, body["reason"], body["operation"]) == (
        403,
        "project_not_allowed",
        "git.Repositories_List",
    )
    status, body = await call(gw, keys["reader"], "POST", "/fabrikam/Fiber/_apis/wit/wiql")
    assert (status, body["reason"], body["operation"]) == (
        403,
        "missing_scope",
        "wit.Wiql_QueryByWiql",
    )
    assert fake.seen == []
    status, _ = await call(gw, keys["reader"], "GET", "/fabrikam/_apis/git/repositories")
    assert status == 200
    assert [(s.method, s.path) for s in fake.seen] == [("GET", "/fabrikam/_apis/git/repositories")]
