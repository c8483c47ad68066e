"""The prepared keyed hashes of the decision path (numbers.keyed_hasher: the HMAC's
key set up once, a copy per value) give exactly keyed_hash's answer, and each is
bound to its own secret: another secret (another Keys, settings swapped on an
engine) hashes with that secret, never with the one prepared before."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dialguard.config import Settings
from dialguard.decision.keys import Keys
from dialguard.decision.models import DecisionRequest
from dialguard.engine import Engine, request_fingerprint
from dialguard.numbers import keyed_hash, keyed_hasher, parse_number
from dialguard.rules import Policy

S1, S2 = b"s" * 32, b"t" * 32
VALUES = ["+8613800138000", "", "raw:13800", "party:acct-7", "é中文", "x" * 300]


@pytest.mark.parametrize("size", [16, 8, 32])
@pytest.mark.parametrize("prefix", ["", "n:", "c:", "party:", "req:"])
def test_keyed_hasher_is_keyed_hash(prefix, size):
    h = keyed_hasher(S1, prefix, size)
    for v in VALUES:
        assert h(v) == keyed_hash(S1, prefix + v, size)
        assert h(v) == h(v)  # the prepared state is copied, never consumed


def test_keys_hash_with_their_own_secret():
    a, b = Keys("dg", S1), Keys("dg", S2)
    for v in VALUES:
        assert a.number_tag(v) == keyed_hash(S1, "n:" + v) != b.number_tag(v) == keyed_hash(S2, "n:" + v)
        assert a.cid_tag(v) == keyed_hash(S1, "c:" + v) != b.cid_tag(v) == keyed_hash(S2, "c:" + v)
        assert a.party_tag(v) == keyed_hash(S1, "party:" + v) != b.party_tag(v) == keyed_hash(S2, "party:" + v)
    assert a == Keys("dg", S1) and a != b and hash(a) == hash(Keys("dg", S1))
    assert replace(a, secret=S2).number_tag("+1") == keyed_hash(S2, "n:+1")


def test_engine_fingerprint_follows_the_secret_in_effect():
    eng = Engine(None, replace(Settings(), hash_secret=S1), Policy.load("cn-default"), prefix="dg")
    req = DecisionRequest(number="+8613800138000", campaign="c1", agent="a1", call_id="u1", subject="debt-1")
    info = parse_number(req.number, "CN")
    assert eng._fingerprint(req, info) == request_fingerprint(S1, req, info)
    eng.settings = replace(eng.settings, hash_secret=S2)  # a test or a reload swaps the settings
    assert eng._fingerprint(req, info) == request_fingerprint(S2, req, info) != request_fingerprint(S1, req, info)
    assert eng._fingerprint(req.model_copy(update={"call_id": None}), info) == ""  # no call id: none
