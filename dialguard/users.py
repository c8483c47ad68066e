"""Users, roles and API tokens of the console and the API (issue 15; sql/100_users.sql).

Roles are ordered: viewer < supervisor < compliance < admin; a role may do
what every role below it may (dialguard/authz.py says what each action needs).
Passwords are hashed with argon2id (argon2-cffi, its default parameters);
an API token is `dgt_<id>_<secret>` and only the SHA-256 of the secret is
stored. Management (add, passwd, role, token) runs on a connection of
dialguard_admin (`dialguard user ...`); the service only reads (authenticate,
token_identity) and keeps its sessions.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("viewer", "supervisor", "compliance", "admin")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
TOKEN_RE = re.compile(r"^dgt_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")
MIN_PASSWORD = 12
LAST_USED_EVERY = timedelta(minutes=1)

_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that the answer
    takes as long as for a wrong password (no user enumeration by timing).
    Made on first use, not at import: an argon2 hash costs about 0.5 s of CPU
    (64 MiB), which every `dialguard` command paid at its start, logins or not.
    The console makes it at its start (web/app.py), so its first unknown login
    is not the slow one."""
    return _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    """Who is acting, authenticated: a console user or a token's user."""

    user: str
    role: str
    via: str  # "web" (session) or "token:<id>"

    def at_least(self, role: str) -> bool:
        return rank(self.role) >= rank(role)


def rank(role: str) -> int:
    try:
        return ROLES.index(role)
    except ValueError:
        raise UserError(f"unknown role {role!r}: one of {', '.join(ROLES)}") from None


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UserError(f"user name {name!r}: lowercase letters, digits, '.', '_' or '-', at most 63")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def verify_password(stored: str | None, password: str) -> bool:
    """True when password matches the stored argon2 hash; never raises."""
    try:
        return _hasher.verify(stored or dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> tuple[str, str, str]:
    """(token, id, sha256 of its secret): the token is shown once, never stored."""
    tid = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return f"dgt_{tid}_{secret}", tid, sha256(secret)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    m = TOKEN_RE.match(token or "")
    return (m.group(1), m.group(2)) if m else None


# -- management (sync, dialguard_admin connection) -----------------------------------
# Each change writes its audit_user_changes row in the same transaction.

def cli_actor() -> str:
    """The identity of `dialguard user` (break-glass on the database host): the OS user of the
    process's uid (dialguard.ids.os_user: not USER nor DIALGUARD_ACTOR, which anyone may type;
    the user behind sudo noted when root runs it)."""
    from dialguard.ids import os_user

    return "cli:" + os_user()


def _audit(conn, actor: str, action: str, name: str, role: str | None = None, token_id: str | None = None,
           **detail) -> None:
    import json

    conn.execute("insert into audit_user_changes (actor, action, user_name, role, token_id, detail) "
                 "values (%s, %s, %s, %s, %s, %s)", (actor, action, name, role, token_id, json.dumps(detail)))


def add_user(conn, name: str, role: str, password: str | None, actor: str | None = None) -> None:
    check_name(name)
    rank(role)
    ph = hash_password(password) if password else None
    with conn.transaction():
        if conn.execute("select 1 from web_users where name = %s", (name,)).fetchone():
            raise UserError(f"user {name!r} exists (dialguard user passwd|role to change it)")
        conn.execute("insert into web_users (name, role, password_hash) values (%s, %s, %s)", (name, role, ph))
        _audit(conn, actor or cli_actor(), "user_add", name, role, password=ph is not None)


def set_password(conn, name: str, password: str, actor: str | None = None) -> None:
    ph = hash_password(password)
    with conn.transaction():
        cur = conn.execute("update web_users set password_hash = %s, updated_at = now() where name = %s",
                           (ph, name))
        if cur.rowcount != 1:
            raise UserError(f"no user {name!r}")
        # a new password ends every session of the old one
        conn.execute("delete from web_sessions where user_name = %s", (name,))
        _audit(conn, actor or cli_actor(), "passwd", name)


def set_role(conn, name: str, role: str, actor: str | None = None) -> None:
    rank(role)
    with conn.transaction():
        cur = conn.execute("update web_users set role = %s, updated_at = now() where name = %s", (role, name))
        if cur.rowcount != 1:
            raise UserError(f"no user {name!r}")
        conn.execute("delete from web_sessions where user_name = %s", (name,))
        _audit(conn, actor or cli_actor(), "role", name, role)


def set_disabled(conn, name: str, disabled: bool, actor: str | None = None) -> None:
    with conn.transaction():
        cur = conn.execute("update web_users set disabled = %s, updated_at = now() where name = %s",
                           (disabled, name))
        if cur.rowcount != 1:
            raise UserError(f"no user {name!r}")
        if disabled:
            conn.execute("delete from web_sessions where user_name = %s", (name,))
        _audit(conn, actor or cli_actor(), "disable" if disabled else "enable", name)


def add_token(conn, name: str, role: str | None = None, label: str = "",
              expires: datetime | None = None, actor: str | None = None) -> tuple[str, str]:
    """A new token for user `name`, scoped to `role` (default: the user's). Returns (token, id)."""
    row = conn.execute("select role from web_users where name = %s", (name,)).fetchone()
    if row is None:
        raise UserError(f"no user {name!r}")
    role = role or row[0]
    if rank(role) > rank(row[0]):
        raise UserError(f"a token of {name!r} (role {row[0]}) cannot have the higher role {role}")
    token, tid, digest = new_token()
    with conn.transaction():
        conn.execute("insert into web_tokens (id, user_name, role, secret_sha256, label, expires_at) "
                     "values (%s, %s, %s, %s, %s, %s)", (tid, name, role, digest, label, expires))
        _audit(conn, actor or cli_actor(), "token_add", name, role, tid, label=label,
               expires=expires.isoformat() if expires else None)
    return token, tid


def revoke_token(conn, tid: str, actor: str | None = None) -> None:
    with conn.transaction():
        row = conn.execute("update web_tokens set revoked_at = now() where id = %s and revoked_at is null "
                           "returning user_name", (tid,)).fetchone()
        if row is None:
            raise UserError(f"no live token {tid!r}")
        _audit(conn, actor or cli_actor(), "token_revoke", row[0], token_id=tid)


def list_users(conn) -> list[dict]:
    rows = conn.execute(
        "select u.name, u.role, u.disabled, u.password_hash is not null, "
        "count(t.id) filter (where t.revoked_at is null and (t.expires_at is null or t.expires_at > now())) "
        "from web_users u left join web_tokens t on t.user_name = u.name group by u.name order by u.name"
    ).fetchall()
    return [{"name": r[0], "role": r[1], "disabled": r[2], "password": r[3], "tokens": r[4]} for r in rows]


# -- authentication (async, the service's connection) ----------------------------------

async def authenticate(conn, name: str, password: str) -> Identity | None:
    """The identity of a console login, or None (unknown, disabled, wrong password)."""
    row = None
    if NAME_RE.match(name or ""):
        cur = await conn.execute("select role, password_hash, disabled from web_users where name = %s", (name,))
        row = await cur.fetchone()
    ok = verify_password(row[1] if row else None, password)
    if not ok or row is None or row[2]:
        return None
    return Identity(name, row[0], "web")


async def token_identity(conn, token: str, now: datetime) -> Identity | None:
    """The identity a Bearer token acts as, or None (malformed, unknown, revoked, expired, user disabled)."""
    parts = parse_token(token)
    if parts is None:
        return None
    tid, secret = parts
    cur = await conn.execute(
        "select t.secret_sha256, t.role, t.expires_at, t.revoked_at, u.name, u.role, u.disabled, t.last_used_at "
        "from web_tokens t join web_users u on u.name = t.user_name where t.id = %s", (tid,))
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(row[0], sha256(secret)):
        return None
    digest, trole, expires, revoked, user, urole, disabled, last = row
    if revoked is not None or disabled or (expires is not None and expires <= now):
        return None
    role = ROLES[min(rank(trole), rank(urole))]
    if last is None or now - last >= LAST_USED_EVERY or last > now:
        # noted once a minute at most: a write (and its commit) per API call would cost more than the answer
        await conn.execute("update web_tokens set last_used_at = %s where id = %s", (now, tid))
    return Identity(user, role, f"token:{tid}")
