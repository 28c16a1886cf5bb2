"""azdo_gateway_key_expiry_seconds on a running gateway's admin /metrics: seconds until each
key with an `expires` runs out, computed at scrape time, and following a reload."""

from __future__ import annotations

import datetime as dt
import time

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.authn.api_key import expiry_epoch
from gateway.reload import Reloader
from tests.harness import new_key


def _key_expiry(text: str) -> dict[tuple[str, str], float]:
    for family in text_string_to_metric_families(text):
        if family.name == "azdo_gateway_key_expiry_seconds":
            return {(s.labels["client"], s.labels["key_id"]): s.value for s in family.samples}
    return {}


async def _scrape(gw) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as s, s.get(gw.admin_url + "/metrics") as r:
        assert r.status == 200
        return _key_expiry(await r.text())


def _client(name: str, keys: list[dict[str, object]]) -> dict[str, object]:
    return {"name": name, "credential": "server", "scopes": ["vso.code"], "api_keys": keys}


async def test_key_expiry_seconds_moves_with_time_and_follows_a_reload(make_gateway) -> None:
    today = dt.datetime.now(dt.UTC).date()
    soon, gone = today + dt.timedelta(days=3), today - dt.timedelta(days=2)
    digests = [new_key()[1] for _ in range(4)]
    gw = await make_gateway(
        {"credentials": {"server": {"type": "pat", "pat": "upstream-pat"}}},
        {
            "ci.yaml": {
                "clients": [
                    _client(
                        "ci",
                        [
                            {"id": "ci-new", "sha256": digests[0], "expires": soon.isoformat()},
                            {"id": "ci-old", "sha256": digests[1], "expires": gone.isoformat()},
                        ],
                    ),
                    _client("forever", [{"id": "f1", "sha256": digests[2]}]),
                ]
            }
        },
    )
    before = time.time()
    first = await _scrape(gw)
    after = time.time()
    assert set(first) == {("ci", "ci-new"), ("ci", "ci-old")}  # no series without an expiry
    new_at, old_at = expiry_epoch(soon), expiry_epoch(gone)
    assert new_at is not None and old_at is not None
    assert new_at - after <= first[("ci", "ci-new")] <= new_at - before
    assert first[("ci", "ci-old")] < 0  # negative once expired
    second = await _scrape(gw)
    assert second[("ci", "ci-new")] < first[("ci", "ci-new")]  # computed when scraped

    later = today + dt.timedelta(days=30)
    policy = gw.config_path.parent / "policies" / "ci.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "clients": [
                    _client(
                        "ci",
                        [{"id": "ci-next", "sha256": digests[3], "expires": later.isoformat()}],
                    )
                ]
            }
        )
    )
    assert await Reloader(gw.gateway, gw.config_path).reload("test")
    third = await _scrape(gw)
    assert set(third) == {("ci", "ci-next")}
    assert 29 * 86400 < third[("ci", "ci-next")] <= 31 * 86400
