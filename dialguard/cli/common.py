"""What every `dialguard` command shares: exit codes, consoles, failing with a
clear message, running one call against the live store.

Exit codes: 0 ok; 1 the command ran and the answer is "no" (a check denied, a
record not found, rules that differ; an empty list is not a "no"); 2 bad input
(rules file, scenario, number, option, file); 3 a service (Redis, PostgreSQL)
is unreachable or not set up.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.markup import escape

from dialguard.config import Settings
from dialguard.dnc import DncDbUnavailable
from dialguard.numbers import NumberError
from dialguard.timeutil import parse_time

EXIT_OK, EXIT_DENIED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_NOT_FOUND = EXIT_DENIED  # "no such record" is a "no", not bad input

out = Console()
err = Console(stderr=True, soft_wrap=True)  # errors stay on one line, whatever the width


def fail(msg: str, code: int = EXIT_BAD_INPUT):
    """Print `error: msg` on stderr and exit with code."""
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)
    raise typer.Exit(code)


def redis_unreachable(settings: Settings, exc: Exception):
    fail(f"Redis unreachable at {settings.redis_where()}: {exc} (start it with `make up` "
         "or set DIALGUARD_REDIS_URL)", EXIT_UNAVAILABLE)


def run(coro_fn, rules: str | None = None):
    """Run coro_fn(admin) with dialguard.admin.Admin on the live Redis; map failures to exit codes.

    Admin loads nothing of the hot path (no Lua preload, no pipelined client, no spool)."""
    from dialguard.admin import Admin
    from dialguard.rules import Policy, RulesError

    settings = Settings()
    try:
        policy = Policy.load(rules or settings.rules)
    except RulesError as exc:
        fail(str(exc))

    async def go():
        admin = await Admin.create(settings, policy)
        try:
            return await coro_fn(admin)
        finally:
            await admin.close()

    try:
        return asyncio.run(go())
    except NumberError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    except DncDbUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except (RedisError, OSError) as exc:
        redis_unreachable(settings, exc)


def time_arg(text: str | None, what: str) -> datetime | None:
    """An option holding an ISO 8601 time with offset (None when not given); exit 2 when malformed."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        fail(f"{what}: {exc}")


def direct(what: str) -> None:
    """A direct write to the store: only in break-glass (dialguard/breakglass.py), else exit 1 saying why."""
    from dialguard import breakglass

    try:
        who = breakglass.require(what)
    except breakglass.BreakGlassRefused as exc:
        fail(str(exc), EXIT_DENIED)
    err.print(f"break-glass: audited as {who}", highlight=False)


def remote_write(path: str, body: dict) -> dict | None:
    """With DIALGUARD_TOKEN: the write through the console's API as the token's user (None without a token).
    A refusal exits 1, a bad request or token 2, the console unreachable 3: never a fallback to the store."""
    from dialguard import remote

    if not remote.token():
        return None
    try:
        return remote.call("POST", path, body)
    except remote.RemoteError as exc:
        fail(str(exc), EXIT_DENIED if exc.status in (403, 404, 409) else EXIT_UNAVAILABLE if exc.status in (0, 503)
             else EXIT_BAD_INPUT)
