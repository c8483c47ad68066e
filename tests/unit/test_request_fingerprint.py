"""What "the identical request" is under a used call id (SPEC §2; decide.lua
keeps the answer per request hash): every request field counts, the number
is compared normalized, nothing is readable from the hash."""

from __future__ import annotations

from types import SimpleNamespace

from dialguard.engine import request_fingerprint
from dialguard.numbers import parse_number

SECRET = b"s" * 32


def fp(number="13800138000", secret=SECRET, **kw):
    req = SimpleNamespace(number=number, campaign="c1", agent="a1", caller_id=None, subject=None, call_id="u1")
    for k, v in kw.items():
        setattr(req, k, v)
    return request_fingerprint(secret, req, parse_number(number, "CN"))


def test_same_request_same_hash_whatever_the_number_format():
    assert fp() == fp("+86 138 0013 8000") == fp("+8613800138000")
    assert len(fp()) == 32 and "13800138000" not in fp()


def test_every_field_makes_another_request():
    base = fp()
    others = [fp("13800138001"), fp(campaign="c2"), fp(agent="a2"), fp(caller_id="+862150000001"),
              fp(subject="debt-1"), fp(region="CN-GD"), fp(postal_code="510000"), fp(party="p1"),
              fp("110"), fp(secret=b"t" * 32)]
    assert len({base, *others}) == len(others) + 1


def test_an_absent_optional_field_is_not_an_empty_one():
    assert fp(subject="") != fp() and fp(region=None) == fp()
