"""A permissive catalog and policy, so proxy tests can run any request through.

Only tests use this: the shipped `run` always wires the real catalog and policy,
which deny by default. Authentication stays real (gateway keys).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.catalog import Catalog
from gateway.policy import Policy
from gateway.types import ClientIdentity, Decision, Match, Operation, RequestContext
from tests.fakes.azdo import FakeAzdo
from tests.harness import RunningGateway, key_client_policy, new_key

PAT = "upstream-pat-0123456789"
PAT_HEADER = aiohttp.encode_basic_auth("", PAT)


class AnyOperation(Catalog):
    def match(self, host: str, method: str, path: str, query: str = "") -> Match | None:
        op = Operation(
            id="test.Any", area="test", host=host, method=method, template=path, scopes=()
        )
        return Match(operation=op, params={}, organization=None, project=None)


class AllowAll(Policy):
    def authorize(self, identity: ClientIdentity, ctx: RequestContext) -> Decision:
        return Decision(True, None)


@dataclass
class Proxy:
    """A gateway in front of a fake Azure DevOps, and a client key for it."""

    gw: RunningGateway
    fake: FakeAzdo
    key: str

    @property
    def url(self) -> str:
        return self.gw.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth("", self.key)}


async def start_proxy(
    make_fake_azdo: Any, make_gateway: Any, *, fake: FakeAzdo | None = None, **gateway_yaml: Any
) -> Proxy:
    """Fake Azure DevOps + gateway (PAT credential, one client, everything allowed)."""
    fake = fake or await make_fake_azdo()
    key, digest = new_key()
    doc: dict[str, Any] = {
        "upstream": {"hosts": {"main": fake.url, "vsrm": fake.url + "/vsrm"}},
        "credentials": {"server": {"type": "pat", "pat": PAT}},
    }
    for name, value in gateway_yaml.items():
        if isinstance(value, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **value}
        else:
            doc[name] = value
    gw = await make_gateway(doc, key_client_policy(digest, scopes=["vso.code"]))
    rt = gw.gateway.runtime
    gw.gateway.swap(
        dataclasses.replace(rt, catalog=AnyOperation(()), policy=AllowAll(rt.config, rt.catalog))
    )
    return Proxy(gw=gw, fake=fake, key=key)
