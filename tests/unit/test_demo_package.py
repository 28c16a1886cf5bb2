"""What ships in gateway/demo is what `azdo-gateway demo` runs: no token forging."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.demo.jwtmint import SigningKeys

DEMO = Path(__file__).resolve().parents[2] / "gateway" / "demo"


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_the_stand_in_signs_only_as_entra_does(alg):
    keys = SigningKeys()
    with pytest.raises(ValueError, match="unsupported alg"):
        keys.sign({"sub": "x"}, alg=alg)
    with pytest.raises(KeyError):
        keys.sign({"sub": "x"}, kid="never-published")


def test_no_forging_code_in_the_package():
    text = "\n".join(p.read_text() for p in DEMO.glob("*.py"))
    for forging in ('"none"', "HS256", "unpublished", "hmac.new"):
        assert forging not in text, forging
