"""Least privilege for dialguard's own connections (issue 13, item 5), on the dev stack.

Redis runs with one ACL user per role (dialguard/redis_acl.py; passwords in
.stack/secrets/redis-<role>.env) and no password-less default user; the
services connect as their role. PostgreSQL: the services' login owns nothing
and is only a member of dialguard_writer. The rest of the suite running with
these users is what shows the grants are enough.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis as syncredis

from dialguard.config import parse_env_file
from dialguard.redis_acl import ROLES


def secrets_dir() -> Path:
    d = os.environ.get("DIALGUARD_SECRETS_DIR")
    assert d, "DIALGUARD_SECRETS_DIR (from .stack/env): run `make up`"
    return Path(d)


def role_client(redis_url: str, role: str) -> syncredis.Redis:
    env = parse_env_file((secrets_dir() / f"redis-{role}.env").read_text())
    r = syncredis.Redis.from_url(f"redis://{redis_url.rsplit('@', 1)[-1]}", username=env["DIALGUARD_REDIS_USER"],
                                 password=env["DIALGUARD_REDIS_PASSWORD"], socket_timeout=3)
    return r


def refused(r: syncredis.Redis, *cmd) -> None:
    """The command is refused for lack of permission (DEBUG: disabled server-wide as well)."""
    with pytest.raises(syncredis.ResponseError) as err:
        r.execute_command(*cmd)
    assert "permission" in str(err.value) or cmd[0] == "DEBUG", (cmd, err.value)


def test_no_password_less_default_user(redis_url):
    host_port = redis_url.rsplit("@", 1)[-1]
    anon = syncredis.Redis.from_url(f"redis://{host_port}", socket_timeout=3)
    with pytest.raises(syncredis.AuthenticationError):
        anon.ping()
    with pytest.raises((syncredis.AuthenticationError, syncredis.ResponseError)):
        syncredis.Redis.from_url(f"redis://default:guess@{host_port}", socket_timeout=3).ping()


@pytest.mark.parametrize("role", ROLES)
def test_no_role_may_administer_the_server_or_leave_its_prefix(redis_url, role):
    r = role_client(redis_url, role)
    assert r.ping()
    for cmd in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
                ("KEYS", "*"), ("DEBUG", "SLEEP", "0"), ("ACL", "SETUSER", "x", "on"), ("SHUTDOWN",),
                ("MONITOR",), ("REPLICAOF", "127.0.0.1", "1"), ("MODULE", "LIST"), ("BGREWRITEAOF",)):
        refused(r, *cmd)
    # Keys outside the installation's prefix (dg*): neither read nor written.
    for cmd in (("GET", "other:secret"), ("SET", "other:secret", "x"), ("HGETALL", "session:1"),
                ("EVAL", "return redis.call('GET', KEYS[1])", 1, "other:secret")):
        refused(r, *cmd)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_may_ask_the_node_its_replication_role(redis_url, role):
    """Behind Sentinel a client checks with ROLE that it reached the primary
    (redisclient.py); a NOPERM there would turn every call into guard_unavailable."""
    assert role_client(redis_url, role).execute_command("ROLE")[0] == b"master"


def test_guard_role_runs_its_scripts_and_reads_nothing_else(redis_url):
    g = role_client(redis_url, "guard")
    assert g.execute_command("EVAL", "return redis.call('HSET', KEYS[1], 'a', '1')", 1, "dgtest:acl:h") in (0, 1)
    assert g.hget("dgtest:acl:h", "a") == b"1"
    g.delete("dgtest:acl:h")
    # DIALGUARD_REDIS_WAIT_REPLICAS: an ALLOW waits for a replica (no replica here: 0 acknowledged).
    assert g.execute_command("WAIT", 0, 10) == 0
    # Not the shipper's or an admin's commands: no consumer groups, no SCAN, no XREADGROUP.
    for cmd in (("SCAN", "0"), ("XREADGROUP", "GROUP", "g", "c", "STREAMS", "dgtest:acl:{g}:audit", ">"),
                ("XGROUP", "DESTROY", "dgtest:acl:{g}:audit", "shippers"), ("RENAME", "dgtest:acl:a", "dgtest:acl:b"),
                ("CLIENT", "LIST"), ("CLIENT", "KILL", "ID", "1"), ("INFO",)):
        refused(g, *cmd)


def test_shipper_role_cannot_write_counters(redis_url):
    s = role_client(redis_url, "shipper")
    for cmd in (("HSET", "dgtest:acl:{g}:pause", "all", "1"), ("DEL", "dgtest:acl:{g}:camp:x"),
                ("ZADD", "dgtest:acl:x", "1", "a"),
                ("SET", "dgtest:acl:{g}:clock", "0")):
        refused(s, *cmd)


def test_web_role_writes_only_what_its_admin_actions_write(redis_url):
    w = role_client(redis_url, "web")
    # the kill switch and its audit record, in one MULTI (Engine.pause)
    p = w.pipeline(transaction=True)
    p.hset("dgtest:acl:{g}:pause", "camp:x", "1")
    p.xadd("dgtest:acl:{g}:audit", {"t": "admin"})
    p.execute()
    w.delete("dgtest:acl:{g}:pause", "dgtest:acl:{g}:audit")
    # not the guard's counters, not a consumer group, not SCAN, nor a script writing them
    for cmd in (("ZADD", "dgtest:acl:x", "1", "a"), ("SADD", "dgtest:acl:x", "a"), ("LPUSH", "dgtest:acl:x", "a"),
                ("INCR", "dgtest:acl:x"), ("SCAN", "0"), ("INFO",),
                ("XREADGROUP", "GROUP", "g", "c", "STREAMS", "dgtest:acl:{g}:audit", ">"),
                ("HSET", "elsewhere:x", "a", "1")):
        refused(w, *cmd)
    with pytest.raises(syncredis.ResponseError, match="can't run this command|can't access"):  # a script too
        w.execute_command("EVAL", "return redis.call('ZADD', KEYS[1], 1, 'a')", 1, "dgtest:acl:x")
    # its other admin writes, each command on its own keys only (ACL selectors): the approved caller
    # IDs and a number's campaign DNC set (SADD/SREM), the cool-downs (ZADD), a caller ID's complaint log
    # and the index of the campaigns with rules of their own (a campaign approved or revoked)
    own = {"SADD": ("dgtest:acl:{g}:cids", "dgtest:acl:{g}:camprules", "dgtest:acl:{n:ab}:dncc"),
           "SREM": ("dgtest:acl:{g}:cids", "dgtest:acl:{g}:camprules"),
           "ZADD": ("dgtest:acl:{g}:cool",), "LPUSH": ("dgtest:acl:{c:ab}:e",), "LTRIM": ("dgtest:acl:{c:ab}:e",)}
    for cmd, keys in own.items():
        for k in keys:
            args = {"ZADD": ("1", "a"), "LTRIM": ("0", "9")}.get(cmd, ("a",))
            w.execute_command(cmd, k, *args)
    assert w.execute_command("EVAL", "return redis.call('ZADD', KEYS[1], 2, 'a')", 1, "dgtest:acl:{g}:cool") == 0
    w.delete("dgtest:acl:{g}:cids", "dgtest:acl:{g}:camprules", "dgtest:acl:{n:ab}:dncc", "dgtest:acl:{g}:cool", "dgtest:acl:{c:ab}:e")
    # the same commands on the guard's counters and logs: refused
    for cmd in (("SADD", "dgtest:acl:{g}:pool", "a"), ("ZADD", "dgtest:acl:{n:ab}:a:all", "1", "a"),
                ("ZADD", "dgtest:acl:{c:ab}:live", "1", "a"), ("LPUSH", "dgtest:acl:{c:ab}:o", "a"),
                ("SREM", "dgtest:acl:{g}:hp:x", "a")):
        refused(w, *cmd)
    with pytest.raises(syncredis.ResponseError, match="can't access"):
        w.execute_command("EVAL", "return redis.call('ZADD', KEYS[1], 1, 'a')", 1, "dgtest:acl:{n:ab}:a:all")


def test_the_services_connect_as_their_own_users(redis_url):
    """The stack's FastAGI server, shipper, dialer and console: each as its role, none as default."""
    clients = role_client(redis_url, "admin").client_list()
    users = {c["user"] for c in clients}
    assert {"dialguard-guard", "dialguard-shipper", "dialguard-dialer", "dialguard-web"} <= users, users
    assert "default" not in users, users


# -- PostgreSQL ----------------------------------------------------------------------

def test_service_login_owns_nothing_and_cannot_rewrite_the_audit(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        me = c.execute("select current_user").fetchone()[0]
        assert not c.execute("select rolsuper or rolcreatedb or rolcreaterole from pg_roles "
                             "where rolname = current_user").fetchone()[0]
        assert c.execute("select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
                         ).fetchone()[0] != me
        assert c.execute("select count(*) from pg_tables where schemaname = 'public' and tableowner = %s",
                         (me,)).fetchone()[0] == 0
        assert c.execute("select pg_has_role(current_user, 'dialguard_writer', 'MEMBER')").fetchone()[0]
        assert not c.execute("select pg_has_role(current_user, 'dialguard_admin', 'MEMBER')").fetchone()[0]
        assert c.execute("select count(*) from audit_decisions").fetchone()[0] >= 0  # may read
        for stmt in ("update audit_decisions set allowed = true",
                     "delete from audit_decisions",
                     "truncate audit_events",
                     "alter table audit_decisions drop column number_enc",
                     "alter table audit_decisions disable trigger audit_decisions_append_only",
                     "drop table audit_outcomes",
                     "alter table dialer_leads add column number_plain text",
                     "create table public.mine (x int)",
                     "set role dialguard_admin"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
