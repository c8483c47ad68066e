"""`dialguard user add|passwd|role|disable|enable|token|revoke|list`: bootstrap the console's users.

Connects with DIALGUARD_PG_ADMIN_DSN (a login of dialguard_admin, as `db
migrate`): the service's own login may read users but never change them.
Passwords come from a prompt (asked twice) or, with --password-stdin, from
the first line of stdin; never from an argument (it would sit in the shell
history and in `ps`). A token is printed once and only its hash is kept.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import datetime
from typing import Optional

import typer

from dialguard import users as u
from dialguard.cli.common import EXIT_UNAVAILABLE, fail
from dialguard.users import ROLES, UserError

app = typer.Typer()
user_app = typer.Typer(help="Console and API users, roles and tokens (PostgreSQL, sql/100_users.sql).",
                       no_args_is_help=True)
app.add_typer(user_app, name="user")


def _conn():
    import psycopg

    from dialguard.audit.db import admin_dsn, connect, redact

    dsn = admin_dsn()
    try:
        return connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL unreachable at {redact(dsn)}: {exc} (set DIALGUARD_PG_ADMIN_DSN)", EXIT_UNAVAILABLE)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            fail("--password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        fail("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        fail("the two passwords differ")
    return first


def _role(role: str) -> str:
    if role not in ROLES:
        fail(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def _do(fn, *args, **kw):
    import psycopg

    with _conn() as conn:
        try:
            return fn(conn, *args, **kw)
        except UserError as exc:
            fail(str(exc))
        except psycopg.errors.UndefinedTable:
            fail("no users table: run `dialguard db migrate` first", EXIT_UNAVAILABLE)
        except psycopg.errors.InsufficientPrivilege as exc:
            fail(f"{exc}: user management needs DIALGUARD_PG_ADMIN_DSN (a login of dialguard_admin)", EXIT_UNAVAILABLE)


@user_app.command("add")
def add(name: str, role: str = typer.Option(..., "--role", help=" | ".join(ROLES)),
        no_password: bool = typer.Option(False, "--no-password", help="token-only user (a machine)"),
        password_stdin: bool = typer.Option(False, "--password-stdin")):
    """Add a user with a role; the password is asked (or read from stdin)."""
    _role(role)
    pw = None if no_password else _password(password_stdin)
    if pw is not None:
        try:
            u.check_password(pw)
        except UserError as exc:
            fail(str(exc))
    _do(u.add_user, name, role, pw)
    typer.echo(f"user {name} added, role {role}")


@user_app.command("passwd")
def passwd(name: str, password_stdin: bool = typer.Option(False, "--password-stdin")):
    """Set a user's password (ends their sessions)."""
    pw = _password(password_stdin)
    _do(u.set_password, name, pw)
    typer.echo(f"password of {name} changed")


@user_app.command("role")
def role_(name: str, role: str):
    """Change a user's role (ends their sessions)."""
    _do(u.set_role, name, _role(role))
    typer.echo(f"{name} is now {role}")


@user_app.command("disable")
def disable(name: str):
    """Refuse the user's logins and tokens (ends their sessions)."""
    _do(u.set_disabled, name, True)
    typer.echo(f"{name} disabled")


@user_app.command("enable")
def enable(name: str):
    _do(u.set_disabled, name, False)
    typer.echo(f"{name} enabled")


@user_app.command("token")
def token(name: str, role: Optional[str] = typer.Option(None, "--role", help="at most the user's role"),
          label: str = typer.Option("", "--label"),
          expires: Optional[str] = typer.Option(None, "--expires", help="ISO 8601 time with offset")):
    """Mint an API token for the user (printed once; only its hash is stored)."""
    exp = None
    if expires:
        exp = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if exp.tzinfo is None:
            fail("--expires needs a UTC offset")
    tok, tid = _do(u.add_token, name, _role(role) if role else None, label, exp)
    typer.echo(f"token {tid} for {name} (keep it secret; it is not shown again):", err=True)
    typer.echo(tok)


@user_app.command("revoke")
def revoke(token_id: str):
    """Revoke a token by its id (the part after dgt_)."""
    _do(u.revoke_token, token_id)
    typer.echo(f"token {token_id} revoked")


@user_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")):
    rows = _do(u.list_users)
    if as_json:
        print(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['name']:<24} {r['role']:<11} {'disabled ' if r['disabled'] else ''}"
                   f"{'password ' if r['password'] else 'no-password '}tokens={r['tokens']}")
