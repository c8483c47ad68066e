"""Users, roles and tokens on the stack's real PostgreSQL (sql/090_users.sql, dialguard/users.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from dialguard import users as u
from dialguard.audit.db import admin_dsn, service_dsn

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
PW = "a long enough passphrase"


@pytest.fixture
def admin():
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        yield c


@pytest.fixture
def name(admin):
    n = f"t{uuid.uuid4().hex[:10]}"
    yield n
    admin.execute("delete from web_users where name = %s", (n,))


async def _service():
    return await psycopg.AsyncConnection.connect(service_dsn(), autocommit=True)


async def test_password_login_and_its_failures(admin, name):
    u.add_user(admin, name, "supervisor", PW)
    stored = admin.execute("select password_hash from web_users where name = %s", (name,)).fetchone()[0]
    assert stored.startswith("$argon2id$") and PW not in stored
    conn = await _service()
    try:
        ident = await u.authenticate(conn, name, PW)
        assert ident == u.Identity(name, "supervisor", "web")
        assert await u.authenticate(conn, name, PW + "x") is None
        assert await u.authenticate(conn, name + "nobody", PW) is None
        assert await u.authenticate(conn, "Bad Name", PW) is None
        u.set_disabled(admin, name, True)
        assert await u.authenticate(conn, name, PW) is None
    finally:
        await conn.close()


def test_add_refuses_duplicates_short_passwords_and_unknown_roles(admin, name):
    u.add_user(admin, name, "viewer", PW)
    with pytest.raises(u.UserError, match="exists"):
        u.add_user(admin, name, "viewer", PW)
    with pytest.raises(u.UserError, match="too short"):
        u.set_password(admin, name, "short")
    with pytest.raises(u.UserError, match="unknown role"):
        u.set_role(admin, name, "root")


async def test_token_acts_with_the_lower_of_its_role_and_the_users(admin, name):
    u.add_user(admin, name, "compliance", None)
    with pytest.raises(u.UserError, match="higher role"):
        u.add_token(admin, name, "admin")
    tok, tid = u.add_token(admin, name, "supervisor", "crm")
    stored = admin.execute("select secret_sha256 from web_tokens where id = %s", (tid,)).fetchone()[0]
    assert tok.split("_", 2)[2] not in stored
    conn = await _service()
    try:
        assert await u.token_identity(conn, tok, NOW) == u.Identity(name, "supervisor", f"token:{tid}")
        u.set_role(admin, name, "viewer")  # demoted user: the token follows
        assert (await u.token_identity(conn, tok, NOW)).role == "viewer"
        assert await u.token_identity(conn, tok[:-1] + ("A" if tok[-1] != "A" else "B"), NOW) is None
        assert await u.token_identity(conn, "not-a-token", NOW) is None
        u.revoke_token(admin, tid)
        assert await u.token_identity(conn, tok, NOW) is None
        tok2, _ = u.add_token(admin, name, expires=NOW + timedelta(hours=1))
        assert await u.token_identity(conn, tok2, NOW) is not None
        assert await u.token_identity(conn, tok2, NOW + timedelta(hours=1)) is None
        u.set_disabled(admin, name, True)
        tok3, _ = u.add_token(admin, name)
        assert await u.token_identity(conn, tok3, NOW) is None
    finally:
        await conn.close()


def test_the_service_login_cannot_create_users_or_tokens(admin, name):
    u.add_user(admin, name, "viewer", PW)
    with psycopg.connect(service_dsn(), autocommit=True) as svc:
        assert svc.execute("select role from web_users where name = %s", (name,)).fetchone() == ("viewer",)
        for stmt in ("insert into web_users (name, role) values ('mallory', 'admin')",
                     f"update web_users set role = 'admin' where name = '{name}'",
                     f"insert into web_tokens (id, user_name, role, secret_sha256) values "
                     f"('x', '{name}', 'viewer', 'y')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                svc.execute(stmt)


def _cli(*args, stdin: str = ""):
    return subprocess.run([sys.executable, "-m", "dialguard.cli", "user", *args], input=stdin,
                          capture_output=True, text=True, env=os.environ, timeout=60)


def test_every_change_is_audited_append_only_with_the_os_user(admin, name):
    u.add_user(admin, name, "viewer", PW)
    u.set_role(admin, name, "supervisor")
    tok, tid = u.add_token(admin, name, label="crm")
    u.revoke_token(admin, tid)
    u.set_password(admin, name, PW + "!", actor="web:boss")
    u.set_disabled(admin, name, True)
    rows = admin.execute("select actor, action, role, token_id from audit_user_changes where user_name = %s "
                         "order by id", (name,)).fetchall()
    me = u.cli_actor()
    assert me.startswith("cli:") and me != "cli:"
    assert rows == [(me, "user_add", "viewer", None), (me, "role", "supervisor", None),
                    (me, "token_add", "supervisor", tid), (me, "token_revoke", None, tid),
                    ("web:boss", "passwd", None, None), (me, "disable", None, None)]
    assert tok not in str(admin.execute("select detail from audit_user_changes where token_id = %s",
                                        (tid,)).fetchall())
    with psycopg.connect(service_dsn(), autocommit=True) as svc:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            svc.execute("insert into audit_user_changes (actor, action, user_name) values ('x', 'passwd', 'y')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):  # not even the owner
        admin.execute("delete from audit_user_changes where user_name = %s", (name,))


def test_cli_actor_ignores_the_typed_dialguard_actor(monkeypatch):
    monkeypatch.setenv("DIALGUARD_ACTOR", "chief-compliance-officer")
    monkeypatch.setenv("USER", "chief-compliance-officer")
    monkeypatch.setenv("LOGNAME", "chief-compliance-officer")
    assert u.cli_actor() == "cli:" + __import__("pwd").getpwuid(__import__("os").getuid()).pw_name


def test_cli_reads_the_password_from_stdin_never_an_argument(admin, name):
    r = _cli("add", name, "--role", "supervisor", "--password-stdin", stdin=PW + "\n")
    assert r.returncode == 0, r.stderr
    assert admin.execute("select role from web_users where name = %s", (name,)).fetchone() == ("supervisor",)
    # a password given as an argument is refused (no such option / extra argument)
    r = _cli("passwd", name, "--password", PW)
    assert r.returncode == 2
    r = _cli("add", name + "x", "--role", "viewer", stdin=PW + "\n")  # no terminal, no --password-stdin
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    r = _cli("token", name, "--role", "viewer")
    assert r.returncode == 0, r.stderr
    assert u.parse_token(r.stdout.strip()) is not None
    r = _cli("role", name, "root")
    assert r.returncode == 2 and "role" in r.stderr


async def test_a_login_does_not_stall_the_event_loop(admin, name, monkeypatch):
    import asyncio
    import threading
    import time

    u.add_user(admin, name, "supervisor", PW)
    verifying, done = threading.Event(), threading.Event()
    released = []
    real = u.verify_password

    def slow_verify(stored, password):
        verifying.set()
        # held until the loop, still running, releases it; on the loop's own
        # thread nothing could, and the wait runs out
        released.append(done.wait(3))
        return real(stored, password)

    monkeypatch.setattr(u, "verify_password", slow_verify)
    conn = await _service()
    try:
        login = asyncio.create_task(u.authenticate(conn, name, PW))
        t0 = time.monotonic()
        while not verifying.is_set() and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)  # the loop runs while the hash is checked
        assert verifying.is_set()
        done.set()
        assert await login == u.Identity(name, "supervisor", "web")
        assert released == [True]
    finally:
        done.set()
        await conn.close()
