"""decide.lua's count_text and outcome.lua's itext (stop 18) write an integer without
sprintf's float path. They must write exactly what was written before: Lua's own
tostring ('%.14g', the audit's counts `cs`, the health state) and, for a number handed
to redis.call, Redis' '%.17g'. Run in the real Redis' Lua, the functions cut out of
the scripts themselves, over the boundaries of each path."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import redis

LUA = resources.files("dialguard.decision.lua")

VALUES = ([0, 1, 5, 9, 10, 11, 42, 99, 100, 101, 999, 1000, 86400000, 86400000 + 604800000, 1795399200010,
           10 ** 13 - 1, 10 ** 13, 10 ** 14 - 1, 10 ** 14, 10 ** 14 + 1, 2 ** 53, 10 ** 17, 0.5, 9.5, 99.25,
           1e-3, -1, -10, -0.5])


def _function(script: str, name: str) -> str:
    src = LUA.joinpath(script).read_text()
    m = re.search(r"^local function " + name + r"\(n\)\n.*?^end\n", src, re.S | re.M)
    assert m, name
    return m.group(0)


@pytest.fixture
def r(redis_url):
    return redis.Redis.from_url(redis_url)


def _compare(r, fn_src: str, name: str, as_argument: bool) -> None:
    # ARGV: the values as text Lua parses exactly (integers as digits, the rest as repr)
    args = [str(v) for v in VALUES]
    script = "local floor = math.floor\n" + fn_src + """
local out = {}
for i = 1, #ARGV do
  local n = tonumber(ARGV[i])
  local t = """ + name + """(n)
  out[#out + 1] = {type(t), tostring(t), tostring(n)}
end
return out
"""
    rows = r.eval(script, 0, *args)
    for v, (ty, got, lua_text) in zip(VALUES, rows):
        if ty == b"number":  # handed back as it was: Redis / Lua write it as before
            assert as_argument, (v, got)
            continue
        assert ty == b"string", (v, ty)
        # what the same number was written as before: Lua's tostring in a concatenation,
        # Redis' '%.17g' as a command argument
        want = ("%.17g" % float(v)).encode() if as_argument else lua_text
        assert got == want, (v, got, want)


def test_count_text_writes_what_tostring_wrote(r):
    _compare(r, _function("decide.lua", "count_text"), "count_text", as_argument=False)


def test_itext_writes_what_lua_and_redis_wrote(r):
    fn = _function("outcome.lua", "itext")
    _compare(r, fn, "itext", as_argument=True)  # as redis.call's argument
    # and in a concatenation / table.concat (the health state, 'lg'): Lua's tostring
    rows = r.eval("local floor = math.floor\n" + fn + """
local out = {}
for i = 1, #ARGV do local n = tonumber(ARGV[i]); out[#out + 1] = {'' .. itext(n), tostring(n)} end
return out""", 0, *[str(v) for v in VALUES])
    for v, (got, want) in zip(VALUES, rows):
        assert got == want, (v, got, want)
