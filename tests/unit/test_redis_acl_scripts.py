"""Every Redis command a Lua script calls is granted to each role that runs it
(dialguard/redis_acl.py). A script runs with its caller's ACL: a command left
out is refused in the middle of the script (after its earlier writes), and only
in production, where the services log in as their roles. Stop 16's outcome.lua
called LINDEX, which the guard's user lacked: every outcome of a busy caller ID
failed half-applied on the dev stack while the tests, logged in as admin, passed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dialguard import redis_acl

LUA = Path(redis_acl.__file__).parent / "decision" / "lua"

# Which roles run which script (the engine runs decide/outcome/event/penalties in the
# FastAGI server, the outcome reader and the dialer; the console asks decide.lua read-only
# questions and imports DNC lists; rules/calendars versions are published by admin and web).
RUN_BY = {
    "decide.lua": ("guard", "dialer", "web"),
    "outcome.lua": ("guard", "dialer"),
    "event.lua": ("guard", "dialer"),
    "penalties.lua": ("guard", "dialer"),
    "dnc.lua": ("dialer", "web", "admin"),
    "rules.lua": ("web", "admin"),
    "calendars.lua": ("web", "admin"),
}
# decide.lua in read-only mode (the console's eligibility questions) writes nothing:
# the web role's grants need only cover its reads.
READ_ONLY_FOR = {("decide.lua", "web")}
WRITES = {"del", "unlink", "set", "hset", "hdel", "hincrby", "pexpire", "persist", "sadd", "srem", "zadd", "zrem",
          "zremrangebyscore", "xadd", "lpush", "ltrim", "incrby", "expire", "pexpireat", "hsetnx", "rpush"}


def commands(script: str) -> set[str]:
    text = (LUA / script).read_text()
    # redis.call('X', ...), redis.pcall('X', ...) and pcall(redis.call, 'X', ...)
    return {c.lower() for c in re.findall(r"redis\.p?call(?:\(|\s*,)\s*'([A-Za-z]+)'", text)}


def granted(role: str) -> set[str]:
    rules = redis_acl.acl_rules(role, "dg")
    if "+@all" in rules.split():
        return {"*"}
    return {t[1:].split("|")[0] for t in rules.split() if t.startswith("+") and not t.startswith("+@")}


def test_every_script_is_assigned_to_the_roles_that_run_it():
    assert {p.name for p in LUA.glob("*.lua")} == set(RUN_BY)


@pytest.mark.parametrize("script,role", [(s, r) for s, roles in RUN_BY.items() for r in roles])
def test_each_command_of_a_script_is_granted_to_its_roles(script, role):
    need = commands(script)
    assert need, script
    if (script, role) in READ_ONLY_FOR:
        need -= WRITES
    have = granted(role)
    if "*" in have:
        return
    missing = sorted(need - have)
    assert not missing, f"{script} calls {missing}, which the {role} role's Redis user may not run"


def test_the_check_reads_the_scripts_commands():
    """The parser finds what the scripts call (a regex that found nothing would pass everything)."""
    assert {"lpush", "ltrim", "lrange", "hset"} <= commands("outcome.lua")
    assert {"zcount", "evalsha"} & commands("decide.lua") == {"zcount"}
