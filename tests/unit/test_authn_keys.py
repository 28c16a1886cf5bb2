from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.authn import Authentication
from gateway.authn.api_key import expiry_epoch, is_gateway_key, looks_like_pat, new_key
from gateway.authn.base import presented_credential
from gateway.authn.throttle import FailureThrottle, source_key
from gateway.cli import main
from gateway.config.model import Config, GatewayConfig, PolicyFile
from gateway.errors import TooManyRequests, Unauthenticated
from gateway.types import RequestContext


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def legacy_pat() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(52))


def new_pat() -> str:
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    rnd = "".join(secrets.choice(b64) for _ in range(52))
    return rnd + "JQQJ99" + "BA" + "A" * 12 + "ASAA" + "AZDO" + "Xy1z"


def config(clients: list[dict], gateway: dict | None = None) -> Config:
    pol = PolicyFile.model_validate({"clients": clients})
    return Config(
        path=Path("gateway.yaml"),
        gateway=GatewayConfig.model_validate(gateway or {}),
        clients=pol.clients,
        routes=(),
    )


def request(*headers: tuple[str, str], remote: str = "203.0.113.7"):
    req = make_mocked_request("GET", "/fabrikam/_apis/projects", headers=CIMultiDict(headers))
    return req.clone(remote=remote)


def ctx(source: str | None = "203.0.113.7") -> RequestContext:
    return RequestContext(request_id="r1", method="GET", source=source)


@pytest.fixture
def keys():
    k1, k2, old = new_key(), new_key(), new_key()
    sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    cfg = config(
        [
            {
                "name": "ci",
                "credential": "c",
                "api_keys": [
                    {"id": "k1", "sha256": sha(k1)},
                    {"id": "k2", "sha256": sha(k2).upper(), "expires": tomorrow.isoformat()},
                    {"id": "old", "sha256": sha(old), "expires": "2020-01-01"},
                ],
            },
        ]
    )
    return Authentication(cfg), k1, k2, old


# --- key format ---------------------------------------------------------------


def test_new_keys_are_prefixed_unique_and_checksummed():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("azgw_") and len(a) == 54
    assert is_gateway_key(a)
    flipped = a[:10] + ("A" if a[10] != "A" else "B") + a[11:]
    assert not is_gateway_key(flipped)
    assert not looks_like_pat(a)


def test_pat_formats_are_recognised():
    assert looks_like_pat(legacy_pat())
    assert looks_like_pat(new_pat())
    assert not looks_like_pat(legacy_pat().upper())
    assert not looks_like_pat(legacy_pat()[:51])
    assert not looks_like_pat(new_pat().replace("AZDO", "AZEG"))


def test_expiry_of_a_date_is_the_end_of_that_day_utc():
    end = expiry_epoch(dt.date(2027, 6, 30))
    assert end == dt.datetime(2027, 7, 1, tzinfo=dt.UTC).timestamp()
    assert (
        expiry_epoch(dt.datetime(2027, 6, 30, 12))
        == dt.datetime(2027, 6, 30, 12, tzinfo=dt.UTC).timestamp()
    )
    assert expiry_epoch(None) is None


# --- Authorization parsing ----------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        basic("anything", "KEY"),
        basic("", "KEY"),
        basic("KEY", ""),
        "Bearer KEY",
        "bearer   KEY ",
        "BASIC " + base64.b64encode(b"x:KEY").decode(),
    ],
)
def test_a_key_is_read_from_every_place_a_pat_goes(header):
    got = presented_credential(CIMultiDictProxy(CIMultiDict(Authorization=header)))
    assert got is not None and got.secret == "KEY"


def test_password_may_contain_colons():
    got = presented_credential(CIMultiDictProxy(CIMultiDict(Authorization=basic("u", "a:b"))))
    assert got is not None and got.secret == "a:b"


@pytest.mark.parametrize("header", ["Basic", "Basic " + base64.b64encode(b":").decode(), "Bearer"])
def test_empty_credentials_are_no_credential(header):
    assert presented_credential(CIMultiDictProxy(CIMultiDict(Authorization=header))) is None


@pytest.mark.parametrize(
    "header,why",
    [
        ("Basic !!!notbase64", "base64"),
        ("Basic " + base64.b64encode(b"nocolon").decode(), "':'"),
        ("Basic " + base64.b64encode(b"u:\xff\xfe").decode(), "UTF-8"),
        ("Bearer a b", "token"),
        ("Bearer " + "k\udcff", "ASCII"),
        ("Bearer " + "k" * 20000, "longer"),
    ],
)
def test_malformed_headers_are_401_with_reason(header, why):
    with pytest.raises(Unauthenticated) as err:
        presented_credential(CIMultiDictProxy(CIMultiDict(Authorization=header)))
    assert err.value.reason == "malformed_authorization"
    assert why in err.value.message
    assert err.value.headers["WWW-Authenticate"].startswith('Basic realm="azdo-gateway"')


def test_several_authorization_headers_are_malformed():
    h = CIMultiDictProxy(
        CIMultiDict([("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    )
    with pytest.raises(Unauthenticated) as err:
        presented_credential(h)
    assert err.value.reason == "malformed_authorization"


def test_jwt_shape_is_told_apart_from_keys():
    jwtish = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    assert presented_credential(
        CIMultiDictProxy(CIMultiDict(Authorization="Bearer " + jwtish))
    ).is_jwt
    assert not presented_credential(
        CIMultiDictProxy(CIMultiDict(Authorization="Bearer " + new_key()))
    ).is_jwt
    assert not presented_credential(
        CIMultiDictProxy(CIMultiDict(Authorization="Bearer a.b.c"))
    ).is_jwt


# --- the chain ------------------------------------------------------------------


async def test_valid_keys_identify_the_client_by_key_id(keys):
    authn, k1, k2, _ = keys
    for header, kid in ((basic("git", k1), "k1"), ("Bearer " + k2, "k2"), (basic("", k1), "k1")):
        ident = await authn.authenticate(request(("Authorization", header)), ctx())
        assert (ident.client, ident.subject, ident.auth_method) == ("ci", kid, "api_key")
        assert k1 not in repr(ident) and k2 not in repr(ident)


@pytest.mark.parametrize(
    "which,reason",
    [
        ("old", "key_expired"),
        ("unknown", "unknown_key"),
        ("legacy_pat", "pat_not_accepted"),
        ("pat", "pat_not_accepted"),
    ],
)
async def test_bad_keys_are_401_with_reason_and_never_echoed(keys, which, reason):
    authn, _, _, old = keys
    secret = {"old": old, "unknown": new_key(), "legacy_pat": legacy_pat(), "pat": new_pat()}[which]
    with pytest.raises(Unauthenticated) as err:
        await authn.authenticate(request(("Authorization", basic("me", secret))), ctx())
    assert err.value.reason == reason
    assert secret not in err.value.to_json("r1").decode()
    if reason == "pat_not_accepted":
        assert "gateway key" in err.value.message


async def test_no_credential_is_401_and_not_counted(keys):
    authn = keys[0]
    for _ in range(authn.throttle.max_failures + 5):
        with pytest.raises(Unauthenticated) as err:
            await authn.authenticate(request(), ctx())
        assert err.value.reason == "unauthenticated"
    assert len(authn.throttle) == 0


async def test_repeated_failures_slow_down_that_source_only(keys):
    authn, k1, _, _ = keys
    authn.throttle = FailureThrottle(max_failures=3, window_s=60)
    # the source is the pipeline's (gateway.clientaddr), not the connection's peer
    bad = request(("Authorization", basic("", new_key())), remote="10.0.0.2")
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await authn.authenticate(bad, ctx("198.51.100.1"))
    good_same_source = request(("Authorization", basic("", k1)), remote="10.0.0.2")
    with pytest.raises(TooManyRequests) as err:
        await authn.authenticate(good_same_source, ctx("198.51.100.1"))
    assert err.value.reason == "too_many_failed_authentications"
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60
    other = request(("Authorization", basic("", k1)), remote="10.0.0.2")
    assert (await authn.authenticate(other, ctx("198.51.100.2"))).subject == "k1"


def test_throttle_window_ends_and_memory_is_bounded():
    now = [1000.0]
    t = FailureThrottle(max_failures=2, window_s=10, max_sources=50, clock=lambda: now[0])
    t.failed("192.0.2.1")
    t.failed("192.0.2.1")
    with pytest.raises(TooManyRequests) as err:
        t.check("192.0.2.1")
    assert err.value.headers["Retry-After"] == "10"
    now[0] += 10.5
    t.check("192.0.2.1")  # window over: forgiven
    for i in range(500):
        t.failed(f"10.0.{i // 250}.{i % 250}")
    assert len(t) <= 50


def test_throttle_holds_each_source_until_its_own_window_ends():
    now = [1000.0]
    t = FailureThrottle(max_failures=2, window_s=10, clock=lambda: now[0])
    t.check("192.0.2.1")  # nothing failed yet
    t.failed("192.0.2.1")
    t.failed("192.0.2.1")
    now[0] = 1005.0
    t.failed("192.0.2.2")
    t.failed("192.0.2.2")
    now[0] = 1009.9
    for source in ("192.0.2.1", "192.0.2.2"):
        with pytest.raises(TooManyRequests):
            t.check(source)
    now[0] = 1010.0
    t.check("192.0.2.1")
    with pytest.raises(TooManyRequests):
        t.check("192.0.2.2")
    now[0] = 1015.0
    t.check("192.0.2.2")
    assert len(t) == 0


def test_ipv6_sources_count_per_64():
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.4") == "192.0.2.4"
    assert source_key(None) == "-"


# --- keygen -----------------------------------------------------------------------


def test_keygen_json_gives_key_id_and_sha256_of_the_key_as_sent(capsys):
    assert main(["keygen", "jenkins-legacy", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"key", "id", "sha256"}
    assert doc["key"].startswith("azgw_") and is_gateway_key(doc["key"])
    assert doc["sha256"] == hashlib.sha256(doc["key"].encode()).hexdigest()
    assert doc["id"].startswith("jenkins-legacy-")


async def test_keygen_text_prints_a_policy_line_that_validates(capsys):
    assert main(["keygen", "ci", "--expires", "2030-01-31"]) == 0
    out = capsys.readouterr().out
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("azgw_"))
    policy_line = next(
        line.strip() for line in out.splitlines() if line.strip().startswith("- {id:")
    )
    import yaml

    entry = yaml.safe_load(policy_line)[0]
    assert entry["expires"] == dt.date(2030, 1, 31)
    authn = Authentication(config([{"name": "ci", "credential": "c", "api_keys": [entry]}]))
    ident = await authn.authenticate(request(("Authorization", basic("", key))), ctx())
    assert ident.subject == entry["id"]


def test_keygen_rejects_bad_and_past_dates(capsys):
    with pytest.raises(SystemExit):
        main(["keygen", "ci", "--expires", "soon"])
    assert "not a date" in capsys.readouterr().err
    assert main(["keygen", "ci", "--expires", "2001-01-01"]) == 2


# --- any header at all: an identity or a clear 401, never anything else ----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PLAIN_WORDS = re.compile(r"[A-Za-z ]+")
_SCHEMES = st.sampled_from(
    ["Basic ", "Bearer ", "basic ", "Negotiate ", "", "Basic  ", "Bearer eyJ"]
)
_BODIES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet="ABCDEFGHIJabcdefghij0123456789-_.=", max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(scheme=_SCHEMES, body=_BODIES)
async def test_any_authorization_header_is_an_identity_or_a_clear_401(scheme, body):
    from gateway.errors import Denied, GatewayError

    authn = Authentication(
        config(
            [
                {
                    "name": "ci",
                    "credential": "c",
                    "api_keys": [{"id": "k", "sha256": hashlib.sha256(b"k").hexdigest()}],
                }
            ]
        )
    )
    header = scheme + body
    try:
        req = request(("Authorization", header))
    except ValueError:
        return  # not representable as a header value at all (newlines, NUL)
    try:
        await authn.authenticate(req, ctx())
    except (Unauthenticated, Denied) as err:
        assert err.reason in {
            "unauthenticated",
            "malformed_authorization",
            "unknown_key",
            "pat_not_accepted",
            "invalid_token",
        }
        # never echoed (a body of plain words, such as "Authorization", may be
        # part of the message's own fixed text)
        assert len(body) < 12 or body not in err.message or _PLAIN_WORDS.fullmatch(body)
    except GatewayError as err:  # only an Entra ID token could get further, and none is set up
        raise AssertionError(f"unexpected {err!r}") from None
    finally:
        await authn.close()
