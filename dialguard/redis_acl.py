"""Redis ACL users, one per role (docs/OPERATIONS.md, "Redis users").

Each dialguard component connects as its own user, allowed only the commands
it sends and only the keys under the installation's prefix (DIALGUARD_KEY_PREFIX):

    guard    FastAGI server: its Lua scripts (decide, outcome, event) and the reads around them
    dialer   the campaign dialer: the guard's commands plus its agent leases
    shipper  audit-ship: the audit stream (consumer group reads, XACK, XAUTOCLAIM, trimming)
    admin    the `dialguard` CLI: rules, DNC imports, counters rebuild; still no server administration
    web      `dialguard web`: the reads of the console and of the eligibility API, and the writes of
             the admin actions it performs (kill switches, overrides, campaigns, DNC, events,
             caller IDs), some commands on their own keys only (selectors)

Redis has no per-script permission: a user that may run EVALSHA may load a
script of its own, and every command a script calls is checked against the
user's ACL (Redis 7). So the guard is also allowed the write commands its
scripts use, on its prefix only. What no role gets: FLUSHALL/FLUSHDB, CONFIG,
KEYS, DEBUG, ACL, SHUTDOWN, MONITOR, REPLICAOF, MODULE (the @dangerous
category), and any key outside the prefix.
"""

from __future__ import annotations

import hashlib

ROLES = ("guard", "dialer", "shipper", "admin", "web")

# Every connection: handshake (redis-py sends HELLO/CLIENT SETINFO), PING, TIME, and ROLE:
# a client behind Sentinel checks that the node it reached is the primary (redisclient.py).
# ROLE is in @dangerous (@admin), so it is granted after each role's own rules: the
# admin role's `-@dangerous` would otherwise take it back.
_BASE = "+ping +time +hello +auth +select +client|setname +client|id +client|getname"
_LAST = "+role"

# What the scripts the guard runs call (decide.lua, outcome.lua, event.lua), and the reads around them.
_GUARD = ("+evalsha +eval +script|load +script|exists "
          "+get +mget +exists +pttl +hget +hmget +hgetall +hvals +hkeys +hexists +hlen "
          "+sismember +smembers +scard +zrange +zrangebyscore +zcount +zscore +zcard +zmscore +lrange +llen "
          "+xlen +xinfo|groups +xinfo|stream "
          "+del +unlink +set +hset +hdel +hincrby +pexpire +persist +sadd +srem +zadd +zrem +zremrangebyscore +xadd "
          "+lpush +ltrim "  # outcome.lua / event.lua: the caller-ID health window and its complaints
          "+hscan "  # outcome.lua: the pruning of the lapsed pick penalties ({g}:cidpen)
          "+wait")  # DIALGUARD_REDIS_WAIT_REPLICAS: an ALLOW waits for its reservation on a replica

_SHIPPER = ("+get +hget +hgetall +exists "
            "+xreadgroup +xread +xack +xautoclaim +xclaim +xpending +xrange +xrevrange +xlen +xdel +xtrim "
            "+xgroup|create +xgroup|createconsumer +xgroup|delconsumer +xgroup|setid "
            "+xinfo|groups +xinfo|stream +xinfo|consumers +multi +exec +discard")  # XACK+XDEL in one MULTI

# Agent leases (ari_app/leases.py) on top of the guard's set; INCRBY: dnc.lua's list count,
# for the console's DNC imports (the console runs as the dialer until it has a role of its own).
_DIALER = _GUARD + " +hsetnx +pexpireat +expire +watch +unwatch +multi +exec +discard +incrby"

# The console and the API (dialguard/web): decide.lua in read-only mode (eligibility) and the
# reads around it, the caller-ID health report; writes only what its admin actions write,
# each with its audit record in one MULTI: the kill switch (HSET/HDEL), an approved override
# (DEL, HSET, PEXPIRE) or campaign (DEL, HSET), a rules or calendar version (rules.lua,
# calendars.lua: HSET, HDEL, HINCRBY of the version number), a DNC import (dnc.lua: SET of
# a bucket, INCRBY of the count), XADD to the audit; SET for the
# health settings the engine publishes. Not the guard's counters' writes (ZADD, SADD, LPUSH...).
_WEB = ("+evalsha +eval +script|load +script|exists "
        "+get +mget +exists +pttl +hget +hmget +hgetall +hvals +hkeys +hexists +hlen "
        "+sismember +smembers +scard +zrange +zrangebyscore +zcount +zscore +zcard +zmscore +lrange +llen "
        "+xlen +xinfo|groups +xinfo|stream "
        "+multi +exec +discard +hset +hdel +hincrby +del +pexpire +xadd +set "
        "+incrby")  # dnc.lua (a DNC CSV imported from the console: the list's count)


def _web_selectors(prefix: str) -> str:
    """What the console's other admin writes need beyond that, each command on its own keys
    only (Redis 7 ACL selectors; a selector allows a command when all its keys match):
    SADD/SREM of the approved caller IDs (`callerid add|remove`), of the index of the
    campaigns with rules of their own (a campaign approved or revoked) and of a number's campaign
    DNC set (event.lua, `dnc add|remove --campaign`); ZADD of the caller-ID cool-downs
    (`callerid cooldown`, and event.lua's health cool-down after a complaint or opt-out);
    LPUSH/LTRIM of a caller ID's complaint/opt-out log (event.lua). Not the guard's counters."""
    b = prefix + ":"  # "dg:" for a prefix, "dg*:" for a pattern of prefixes (the dev stack)
    return (f"(+sadd +srem ~{b}{{g}}:cids ~{b}{{g}}:camprules ~{b}{{n:*}}:dncc) (+zadd ~{b}{{g}}:cool) "
            f"(+lpush +ltrim ~{b}{{c:*}}:e)")

# The operator's tools: everything on the prefix but the server's own administration.
_ADMIN = "+@all -@dangerous +info +scan +script|flush +client|list +client|kill +acl|log +acl|whoami"

_CMDS = {"guard": _GUARD, "dialer": _DIALER, "shipper": _SHIPPER, "admin": _ADMIN, "web": _WEB}


def username(role: str) -> str:
    return f"dialguard-{role}"


def key_pattern(prefix: str) -> str:
    """The keys of an installation: `<prefix>:*` (a pattern ending in * is taken as is)."""
    return prefix if prefix.endswith("*") else f"{prefix}:*"


def acl_rules(role: str, prefix: str) -> str:
    """The rules of one role (everything after `ACL SETUSER <name>` but the password)."""
    if role not in _CMDS:
        raise ValueError(f"unknown Redis role {role!r} (one of {', '.join(ROLES)})")
    keys = f"~{key_pattern(prefix)}"
    if role == "admin" and not key_pattern(prefix).startswith("dg*"):
        keys += " ~dgsim:*"  # `dialguard simulate`'s throw-away namespaces (dialguard/simulate.py)
    sel = f" {_web_selectors(prefix.rstrip(':'))}" if role == "web" else ""
    return f"on resetkeys resetchannels {keys} -@all {_BASE} {_CMDS[role]} {_LAST}{sel}"


def setuser_line(role: str, prefix: str, password: str) -> str:
    """`ACL SETUSER` for redis-cli; the password goes in as its SHA-256 (#...), never in clear."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"ACL SETUSER {username(role)} reset {acl_rules(role, prefix)} #{digest}"


def acl_file(passwords: dict[str, str], prefix: str) -> str:
    """A Redis `aclfile`: one user per role, and the default user (the server's
    superuser) behind a generated password (passwords["default"]): no `nopass`.
    Not `off`: Redis 7.0 replays the AOF as the default user, and refuses
    the replayed commands of a disabled one."""
    digest = hashlib.sha256(passwords["default"].encode()).hexdigest()
    lines = [f"user default on resetkeys resetchannels ~* &* +@all #{digest}"]
    for role in ROLES:
        digest = hashlib.sha256(passwords[role].encode()).hexdigest()
        lines.append(f"user {username(role)} {acl_rules(role, prefix)} #{digest}")
    return "\n".join(lines) + "\n"
