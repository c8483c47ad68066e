"""Everyday administration commands: kill switches, lists, events, caller IDs, campaigns.

Each command is one engine call against the live store (DIALGUARD_REDIS_URL),
effective on the next decision on every node.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from redis.exceptions import RedisError

from dialguard.config import Settings
from dialguard.numbers import NumberError, normalize

EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 2, 3


def _fail(msg: str, code: int = EXIT_BAD_INPUT):
    from dialguard.cli import fail
    fail(msg, code)


def _run(coro_fn, rules: str | None = None):
    """Run coro_fn(engine) with an engine on the live store; map failures to exit codes."""
    from dialguard.engine import Engine
    from dialguard.rules import Policy, RulesError

    settings = Settings()
    try:
        policy = Policy.load(rules or settings.rules)
    except RulesError as exc:
        _fail(str(exc))

    async def go():
        engine = await Engine.create(settings, policy)
        try:
            return await coro_fn(engine)
        finally:
            await engine.close()

    try:
        return asyncio.run(go())
    except NumberError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    except (RedisError, OSError) as exc:
        _fail(f"Redis unreachable at {settings.redis_url}: {exc}", EXIT_UNAVAILABLE)


def _time(text: str | None, what: str) -> datetime | None:
    if not text:
        return None
    from dialguard.engine import parse_time
    try:
        return parse_time(text)
    except ValueError as exc:
        _fail(f"{what}: {exc}")


def _say(as_json: bool, **fields):
    if as_json:
        print(json.dumps(fields))
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in fields.items()))


def register(app: typer.Typer) -> None:
    @app.command()
    def pause(campaign: Optional[str] = typer.Option(None, "--campaign"),
              caller_id: Optional[str] = typer.Option(None, "--caller-id")):
        """Kill switch: pause all outbound, one campaign or one caller ID."""
        scope, name = _scope(campaign, caller_id)
        _run(lambda e: e.pause(scope, name))
        typer.echo(f"paused {scope}{' ' + name if name else ''}")

    @app.command()
    def resume(campaign: Optional[str] = typer.Option(None, "--campaign"),
               caller_id: Optional[str] = typer.Option(None, "--caller-id")):
        """Lift a kill switch set with `pause`."""
        scope, name = _scope(campaign, caller_id)
        _run(lambda e: e.resume(scope, name))
        typer.echo(f"resumed {scope}{' ' + name if name else ''}")

    dnc = typer.Typer(help="Do-not-call lists (global, or per campaign).", no_args_is_help=True)
    app.add_typer(dnc, name="dnc")

    @dnc.command("add")
    def dnc_add(number: str, campaign: Optional[str] = typer.Option(None, "--campaign"),
                as_json: bool = typer.Option(False, "--json")):
        changed = _run(lambda e: e.dnc_add(number, campaign))
        _say(as_json, number=_norm(number), list=campaign or "global", added=bool(changed))

    @dnc.command("remove")
    def dnc_remove(number: str, campaign: Optional[str] = typer.Option(None, "--campaign"),
                   as_json: bool = typer.Option(False, "--json")):
        changed = _run(lambda e: e.dnc_remove(number, campaign))
        _say(as_json, number=_norm(number), list=campaign or "global", removed=bool(changed))

    @dnc.command("import")
    def dnc_import(path: Path = typer.Argument(..., help="CSV: a number/phone column, or numbers in the first column"),
                   campaign: Optional[str] = typer.Option(None, "--campaign", help="the campaign's list (default: global)"),
                   rejects: Optional[Path] = typer.Option(None, "--rejects", help="where to write rejected rows (CSV)"),
                   as_json: bool = typer.Option(False, "--json")):
        """Import a large list: normalized, rejected rows reported, resumable after an interruption."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from dialguard.dnc import DncStore, count_rows, import_csv

        if not path.exists():
            _fail(f"{path}: no such file")
        rejects = rejects or path.with_suffix(path.suffix + ".rejects.csv")
        checkpoint = path.with_suffix(path.suffix + ".dnc-import")
        settings = Settings()
        total = count_rows(path)

        async def go(e):
            store = DncStore(e.redis, e.keys)
            with Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                          TimeRemainingColumn(), transient=True, disable=as_json) as bar:
                task = bar.add_task("import", total=total)
                return await import_csv(store, store.list_name(campaign), path, e.default_region,
                                        settings.hash_secret, rejects_path=rejects, checkpoint=checkpoint,
                                        progress=lambda n: bar.update(task, completed=n))

        report = _run(go)
        if as_json:
            print(json.dumps(report.as_dict()))
        else:
            typer.echo(f"{report.rows:,} rows: {report.added:,} added, {report.duplicates:,} already listed, "
                       f"{report.rejected:,} rejected" + (f" (see {rejects})" if report.rejected else "")
                       + (f"; resumed after row {report.resumed_from:,}" if report.resumed_from else ""))
            for line, value, why in report.samples[:5]:
                typer.echo(f"  line {line}: {value!r}: {why}")

    @dnc.command("count")
    def dnc_count(campaign: Optional[str] = typer.Option(None, "--campaign"),
                  as_json: bool = typer.Option(False, "--json")):
        """Entries in the global (or a campaign's) DNC list."""
        from dialguard.dnc import DncStore

        async def go(e):
            store = DncStore(e.redis, e.keys)
            return await store.count(store.list_name(campaign))

        n = _run(go)
        _say(as_json, list=campaign or "global", entries=n)

    @app.command()
    def optout(number: str):
        """Record that the person asked not to be called (permanent)."""
        _run(lambda e: e.opt_out(number))
        typer.echo(f"opted out {_norm(number)}")

    @app.command()
    def complaint(number: str):
        """Record a complaint for the number (permanent block)."""
        _run(lambda e: e.complaint(number))
        typer.echo(f"complaint recorded for {_norm(number)}")

    @app.command()
    def consent(number: str, revoke: bool = typer.Option(False, "--revoke")):
        """Record (or revoke) the person's consent to be called."""
        _run(lambda e: e.consent_revoke(number) if revoke else e.consent(number))
        typer.echo(f"consent {'revoked' if revoke else 'recorded'} for {_norm(number)}")

    cid = typer.Typer(help="Approved caller IDs.", no_args_is_help=True)
    app.add_typer(cid, name="callerid")

    @cid.command("add")
    def cid_add(number: str,
                pool: bool = typer.Option(False, "--pool", help="the guard may pick it for calls without one"),
                campaign: Optional[str] = typer.Option(None, "--campaign", help="add to this campaign's pool")):
        """Approve a caller ID (and put it in the global or a campaign's pool)."""
        n = _norm(number)
        _run(lambda e: e.approve_caller_id(n, pool=pool, campaign=campaign))
        where = f" in campaign {campaign}'s pool" if campaign else (" in the global pool" if pool else "")
        typer.echo(f"approved caller ID {n}{where}")

    @cid.command("remove")
    def cid_remove(number: str, campaign: Optional[str] = typer.Option(None, "--campaign")):
        """Withdraw a caller ID (or take it out of one campaign's pool)."""
        n = _norm(number)
        _run(lambda e: e.remove_caller_id(n, campaign))
        typer.echo(f"removed caller ID {n}" + (f" from campaign {campaign}'s pool" if campaign else ""))

    @cid.command("cooldown")
    def cid_cooldown(number: str, until: str = typer.Option(..., "--until", help="ISO 8601 time with offset")):
        n = _norm(number)
        t = _time(until, "--until")
        _run(lambda e: e.cooldown_caller_id(n, t))
        typer.echo(f"caller ID {n} cooling down until {t.isoformat()}")

    camp = typer.Typer(help="Campaign approval in the live store.", no_args_is_help=True)
    app.add_typer(camp, name="campaign")

    @camp.command("approve")
    def camp_approve(name: str, start: Optional[str] = typer.Option(None, "--start"),
                     end: Optional[str] = typer.Option(None, "--end"),
                     rules: Optional[str] = typer.Option(None, "--rules",
                                                         help="the campaign's own packs, comma-separated")):
        """Approve a campaign, optionally for a date range and with its own rule packs."""
        s, e_ = _time(start, "--start"), _time(end, "--end")
        if s and e_ and e_ <= s:
            _fail("--end must be after --start")
        _run(lambda e: e.set_campaign(name, True, s, e_, rules=rules))
        typer.echo(f"campaign {name} approved" + (f" from {s.isoformat()}" if s else "")
                   + (f" until {e_.isoformat()}" if e_ else ""))

    @camp.command("revoke")
    def camp_revoke(name: str):
        _run(lambda e: e.set_campaign(name, False))
        typer.echo(f"campaign {name} not approved")


def _scope(campaign, caller_id):
    if campaign and caller_id:
        _fail("give --campaign or --caller-id, not both")
    if campaign:
        return "campaign", campaign
    if caller_id:
        return "caller_id", _norm(caller_id)
    return "all", None


def _norm(number: str) -> str:
    try:
        return normalize(number, Settings().default_region)
    except NumberError as exc:
        _fail(str(exc))
