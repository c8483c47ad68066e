"""Everyday administration commands: kill switches, lists, events, caller IDs, campaigns.

Each command is one engine call against the live store (DIALGUARD_REDIS_URL),
effective on the next decision on every node. DNC lists are also kept at rest
in PostgreSQL (DIALGUARD_PG_DSN, table dnc_entries): `dnc add|remove|import`
write both, `dnc export` and `counters rebuild` read it; `--no-db` works on
Redis alone.

Exit codes (dialguard/cli/common.py): 0 ok; 1 the answer is "no" (nothing to
report is not a "no": an empty list exits 0); 2 bad input (number, option,
file, a data key that cannot open the entries); 3 a service (Redis,
PostgreSQL) is unreachable or not set up. Read commands take --json.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from dialguard.callerid_health import directory as _cid_directory
from dialguard.cli.common import (EXIT_DENIED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, direct, fail, remote_write, run,
                                  time_arg)
from dialguard.config import Settings
from dialguard.dnc import GLOBAL_LIST, DncDbUnavailable
from dialguard.masking import mask_number
from dialguard.numbers import NumberError, normalize


def _say(as_json: bool, **fields):
    if as_json:
        print(json.dumps(fields))
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in fields.items()))


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True)


def _campaign_list(campaign: str | None) -> str:
    if campaign == GLOBAL_LIST:
        fail(f"{GLOBAL_LIST!r} names the global list: leave out --campaign for it")
    return campaign or GLOBAL_LIST


async def _open_db(settings: Settings, no_db: bool):
    """dnc_entries, or None with --no-db; DncDbUnavailable (exit 3) when unreachable."""
    if no_db:
        return None
    from dialguard.dnc import DncDb
    return await DncDb.open(settings.pg_dsn)


app = typer.Typer()


@app.command()
def pause(campaign: Optional[str] = typer.Option(None, "--campaign"),
          caller_id: Optional[str] = typer.Option(None, "--caller-id"),
          region: Optional[str] = typer.Option(
              None, "--region", help="a jurisdiction, ISO 3166-2 (US-LA) or a country (US): calls whose "
                                     "callee may be there (number or stated location)"),
          start: Optional[str] = typer.Option(None, "--from", help="with --region: ISO time (default now)"),
          until: Optional[str] = typer.Option(None, "--until", help="with --region: ISO time (default: "
                                                                      "until `resume --region`)"),
          why: str = typer.Option("", "--why", help="the reason, kept in the audit (e.g. the declaration)"),
          status: bool = typer.Option(False, "--status", help="show what is paused; change nothing"),
          as_json: bool = typer.Option(False, "--json")):
    """Kill switch: pause all outbound, one campaign, one caller ID, or calls into a
    region for a window (--status: show them)."""
    if status:
        if campaign or caller_id or region:
            fail("--status shows every kill switch: give it alone")
        return _show_paused(as_json)
    if region is not None:
        return _pause_region(region, start, until, why, campaign, caller_id, as_json)
    if start or until:
        fail("--from and --until go with --region")
    scope, name = _scope(campaign, caller_id)
    if not _remote_killswitch("pause", scope, name):
        direct("pause")
        run(lambda e: e.pause(scope, name))
    _done(as_json, f"paused {scope}{' ' + name if name else ''}", action="pause", scope=scope, name=name)


@app.command()
def resume(campaign: Optional[str] = typer.Option(None, "--campaign"),
           caller_id: Optional[str] = typer.Option(None, "--caller-id"),
           region: Optional[str] = typer.Option(None, "--region", help="lift a `pause --region`"),
           why: str = typer.Option("", "--why"),
           as_json: bool = typer.Option(False, "--json")):
    """Lift a kill switch set with `pause`."""
    if region is not None:
        if campaign or caller_id:
            fail("give --region alone")
        r = remote_write("/api/v1/killswitch", {"action": "resume", "scope": "region", "name": region, "why": why})
        if r is not None:
            return _done(as_json, f"resumed region {r['name']} (as {r['by']})", action="resume", scope="region",
                         name=r["name"], by=r["by"])
        direct("resume")
        try:
            found = run(lambda e: e.resume_region(region, why=why))
        except ValueError as exc:
            fail(str(exc))
        if not found:
            fail(f"{region.upper()} was not paused")
        return _done(as_json, f"resumed region {region.upper()}", action="resume", scope="region",
                     name=region.upper())
    scope, name = _scope(campaign, caller_id)
    if not _remote_killswitch("resume", scope, name):
        direct("resume")
        run(lambda e: e.resume(scope, name))
    _done(as_json, f"resumed {scope}{' ' + name if name else ''}", action="resume", scope=scope, name=name)


@app.command("status")
def status_(as_json: bool = typer.Option(False, "--json")):
    """What is paused (kill switches, as `pause --status`) and until when the
    calendars of the rules in effect are known (a warning within 45 days)."""
    _show_paused(as_json, calendars=True)

dnc = typer.Typer(help="Do-not-call lists (global, or per campaign): Redis for decisions, "
                       "PostgreSQL (dnc_entries) at rest.", no_args_is_help=True)
app.add_typer(dnc, name="dnc")

no_db_opt = typer.Option(False, "--no-db", help="Redis only: do not keep the list at rest in PostgreSQL")


@dnc.command("add")
def dnc_add(number: str, campaign: Optional[str] = typer.Option(None, "--campaign"),
            no_db: bool = no_db_opt, as_json: bool = typer.Option(False, "--json")):
    """List a number: enforced from the next decision, then stored at rest."""
    from dialguard.dnc import DncStore, list_name

    n, lst = _norm(number), _campaign_list(campaign)
    settings = Settings()
    r = remote_write("/api/v1/dnc", {"action": "add", "number": n, "campaign": campaign})
    if r is not None:  # as the token's user, through the console (supervisor or above)
        return _say(as_json, number=n, list=r["list"], added=r["added"], stored=r["stored"], by=r["by"])
    direct("dnc add")

    async def go(e):
        # Redis first: the enforcement point, even if PostgreSQL is down
        changed = await e.dnc_add(n, campaign)
        tag = e.keys.number_tag(n)
        changed = (await DncStore(e.redis, e.keys).add(list_name(campaign), [tag]) > 0) or changed
        if no_db:
            return changed, None
        try:
            db = await _open_db(settings, no_db)
        except DncDbUnavailable as exc:
            raise DncDbUnavailable(f"{n} is listed in Redis (denied from the next decision) but not stored "
                                   f"at rest: {exc}; run the same command again once PostgreSQL is back") \
                from None
        try:
            return changed, await db.add(lst, tag, e.sealer.seal_raw(n), "cli")
        finally:
            await db.close()

    changed, stored = run(go)
    _say(as_json, number=n, list=lst, added=bool(changed), **({} if no_db else {"stored": stored}))


@dnc.command("remove")
def dnc_remove(number: str, campaign: Optional[str] = typer.Option(None, "--campaign"),
               no_db: bool = no_db_opt, as_json: bool = typer.Option(False, "--json")):
    """Take a number off a list (its own flag and the imported list alike), then off the list at rest."""
    n, lst = _norm(number), _campaign_list(campaign)
    settings = Settings()
    r = remote_write("/api/v1/dnc", {"action": "remove", "number": n, "campaign": campaign})
    if r is not None:  # compliance or above
        return _say(as_json, number=n, list=r["list"], removed=r["removed"], unstored=r["unstored"], by=r["by"])
    direct("dnc remove")

    async def go(e):
        changed = await e.dnc_remove(n, campaign)
        if no_db:
            return changed, None
        try:
            db = await _open_db(settings, no_db)
        except DncDbUnavailable as exc:
            # the list at rest still has it: safe (a rebuild would list it again), but say so
            raise DncDbUnavailable(f"{n} is off the Redis list but still stored at rest (a counters rebuild "
                                   f"would list it again): {exc}; run the same command again once "
                                   "PostgreSQL is back") from None
        try:
            return changed, await db.remove(lst, e.keys.number_tag(n), e.sealer)
        except DncDbUnavailable as exc:  # an imported block holds it and the data key cannot re-seal it
            raise DncDbUnavailable(f"{n} is off the Redis list but still stored at rest: {exc}") from None
        finally:
            await db.close()

    changed, deleted = run(go)
    _say(as_json, number=n, list=lst, removed=bool(changed or deleted),
         **({} if no_db else {"unstored": deleted}))


@dnc.command("import")
def dnc_import(path: Path = typer.Argument(..., help="CSV: a number/phone column, or numbers in the first column"),
               campaign: Optional[str] = typer.Option(None, "--campaign", help="the campaign's list (default: global)"),
               rejects: Optional[Path] = typer.Option(None, "--rejects", help="where to write rejected rows (CSV)"),
               no_db: bool = no_db_opt,
               chunk_rows: int = typer.Option(1_000_000, "--chunk-rows", min=1,
                                              help="rows per batch (the resume granularity; at 1,000,000 the importing process peaks at about 520 MB, each worker at 450 MB)"),
               as_json: bool = typer.Option(False, "--json")):
    """Import a large list: normalized, rejected rows reported, resumable after an interruption
    (run the same command again). Stored in Redis and, unless --no-db, at rest in PostgreSQL."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from dialguard.dnc import DncStore, count_rows, import_csv

    if not path.is_file():
        fail(f"{path}: no such file")
    lst = _campaign_list(campaign)
    direct("dnc import")
    rejects = rejects or path.with_suffix(path.suffix + ".rejects.csv")
    checkpoint = path.with_suffix(path.suffix + ".dnc-import")
    settings = Settings()
    total = count_rows(path)

    async def go(e):
        db = await _open_db(settings, no_db)  # before any write: exit 3 without --no-db
        try:
            store = DncStore(e.redis, e.keys)
            with Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                          TimeRemainingColumn(), transient=True, disable=as_json,
                          console=_stderr_console()) as bar:
                task = bar.add_task("import", total=total)
                return await import_csv(store, store.list_name(campaign), path, e.default_region,
                                        settings.hash_secret, rejects_path=rejects, checkpoint=checkpoint,
                                        chunk_rows=chunk_rows, progress=lambda n: bar.update(task, completed=n),
                                        db=db, db_name=lst, source=path.name)
        finally:
            if db is not None:
                await db.close()

    report = run(go)
    if as_json:
        print(json.dumps(report.as_dict() | {"list": lst, "at_rest": not no_db}))
    else:
        typer.echo(f"{report.rows:,} rows: {report.added:,} added, {report.duplicates:,} already listed, "
                   f"{report.rejected:,} rejected" + (f" (see {rejects})" if report.rejected else "")
                   + (f"; resumed after row {report.resumed_from:,}" if report.resumed_from else "")
                   + ("" if no_db else f"; {report.stored:,} new entries stored at rest"))
        if report.resume_note:
            typer.echo(f"note: {report.resume_note}")
        for line, value, why in report.samples[:5]:
            typer.echo(f"  line {line}: {value!r}: {why}")


@dnc.command("count")
def dnc_count(campaign: Optional[str] = typer.Option(None, "--campaign"),
              at_rest: bool = typer.Option(False, "--at-rest", help="also count the entries in PostgreSQL"),
              as_json: bool = typer.Option(False, "--json")):
    """Entries in the global (or a campaign's) DNC list."""
    from dialguard.dnc import DncStore

    lst = _campaign_list(campaign)
    settings = Settings()

    async def go(e):
        store = DncStore(e.redis, e.keys)
        n = await store.count(store.list_name(campaign))
        if not at_rest:
            return n, None
        db = await _open_db(settings, False)
        try:
            return n, await db.count(lst)
        finally:
            await db.close()

    n, stored = run(go)
    _say(as_json, list=lst, entries=n, **({"at_rest": stored} if at_rest else {}))


@dnc.command("export")
def dnc_export(list_: str = typer.Option(GLOBAL_LIST, "--list", help="'global' or a campaign name"),
               out: Optional[Path] = typer.Option(None, "--out", help="CSV file (default: standard output)"),
               hashed: bool = typer.Option(False, "--hashed", help="keyed hashes instead of numbers (no data key needed)"),
               as_json: bool = typer.Option(False, "--json", help="summary as JSON (with --out)")):
    """A list as CSV: E.164 numbers opened with the data key (DIALGUARD_DATA_KEY), or --hashed.
    Read from PostgreSQL: Redis holds fingerprints only."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from dialguard.crypto import Sealer
    from dialguard.dnc import DncDb

    if as_json and out is None:
        fail("--json describes the export: use it with --out FILE (the CSV goes there)")
    try:
        sealer = None if hashed else Sealer()
    except ValueError as exc:  # binascii.Error too
        fail(f"DIALGUARD_DATA_KEY is not usable ({exc}): it must be base64 of 32 bytes, the key the "
              "list was imported with; or export --hashed")
    settings = Settings()
    dest = str(out) if out else "standard output"

    async def go():
        db = await DncDb.open(settings.pg_dsn)
        part = out.with_name(out.name + ".part") if out else None
        f = open(part, "w", newline="") if part else sys.stdout
        written = unreadable = 0
        try:
            total = await db.count(list_)
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["number_hash" if hashed else "number"])
            with Progress(TextColumn("exporting"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                          TimeRemainingColumn(), transient=True, console=_stderr_console(),
                          disable=total < 100_000) as bar:
                task = bar.add_task("export", total=total)
                seen = 0
                async for tag, number in db.entries(list_, sealer):
                    seen += 1
                    if number is False:  # wrong key, damaged row or block: count it, go on
                        unreadable += 1
                        continue
                    w.writerow([tag if hashed else number])
                    written += 1
                    if seen % 10_000 == 0:
                        bar.update(task, completed=seen)
            if part:
                f.close()
                os.replace(part, out)
            else:
                f.flush()
        finally:
            if part and not f.closed:
                f.close()
                part.unlink(missing_ok=True)
            await db.close()
        return total, written, unreadable

    total, written, unreadable = _run_plain(go)
    summary = {"list": list_, "entries": total, "written": written, "unreadable": unreadable,
               "hashed": hashed, "out": str(out) if out else None}
    if out and as_json:
        print(json.dumps(summary))
    else:
        msg = f"exported {written:,} of {total:,} entries of list {list_} to {dest}"
        (typer.echo(msg) if out else _stderr_console().print(msg, highlight=False))
    if unreadable:
        fail(f"{unreadable:,} of {total:,} entries could not be opened with this data key "
              f"(DIALGUARD_DATA_KEY is not the key that sealed them, or the rows are damaged): they are "
              f"left out of {dest}. Set the key the list was imported with and export again, or use --hashed")
    if total == 0 and list_ != GLOBAL_LIST:
        _stderr_console().print(f"note: list {list_!r} has no entries at rest (a campaign's list is "
                                "named as given to `dnc import --campaign`)", highlight=False)


party_opt = typer.Option(None, "--party", help="the person (party id): every number decided with it is blocked")


@app.command()
def optout(number: Optional[str] = typer.Argument(None), party: Optional[str] = party_opt):
    """Record that the person asked not to be called (permanent): the number, the party, or both."""
    if not number and not party:
        fail("give a number, --party, or both")
    what = " and ".join(x for x in (number and _norm(number), party and "the party") if x)
    if _remote_event("opt_out", number, party):
        return typer.echo("opted out " + what)
    direct("optout")
    run(lambda e: e.opt_out(number, party=party))
    typer.echo("opted out " + what)


@app.command()
def complaint(number: Optional[str] = typer.Argument(None), party: Optional[str] = party_opt):
    """Record a complaint (permanent block): for the number, the party, or both."""
    if not number and not party:
        fail("give a number, --party, or both")
    what = " and ".join(x for x in (number and _norm(number), party and "the party") if x)
    if _remote_event("complaint", number, party):
        return typer.echo("complaint recorded for " + what)
    direct("complaint")
    run(lambda e: e.complaint(number, party=party))
    typer.echo("complaint recorded for " + what)


@app.command()
def consent(number: Optional[str] = typer.Argument(None),
            party: Optional[str] = typer.Option(
                None, "--party", help="the person (party id): consent holds at every number decided with it"),
            revoke: bool = typer.Option(False, "--revoke")):
    """Record (or revoke) the person's consent to be called: for the number, the party, or both."""
    if not number and not party:
        fail("give a number, --party, or both")
    what = " and ".join(x for x in (number and _norm(number), party and "the party") if x)
    if _remote_event("consent_revoke" if revoke else "consent", number, party):
        return typer.echo(f"consent {'revoked' if revoke else 'recorded'} for {what}")
    direct("consent")
    run(lambda e: e.consent_revoke(number, party=party) if revoke else e.consent(number, party=party))
    typer.echo(f"consent {'revoked' if revoke else 'recorded'} for " + " and ".join(
        x for x in (number and _norm(number), party and "the party") if x))

cid = typer.Typer(help="Approved caller IDs.", no_args_is_help=True)
app.add_typer(cid, name="callerid")


@cid.command("add")
def cid_add(number: str,
            pool: bool = typer.Option(False, "--pool", help="the guard may pick it for calls without one"),
            campaign: Optional[str] = typer.Option(None, "--campaign", help="add to this campaign's pool")):
    """Approve a caller ID (and put it in the global or a campaign's pool)."""
    n = _norm(number)
    r = remote_write("/api/v1/callerids", {"action": "add", "caller_id": n, "pool": pool, "campaign": campaign})
    if r is None:
        direct("callerid add")
        run(lambda e: e.approve_caller_id(n, pool=pool, campaign=campaign))
    where = f" in campaign {campaign}'s pool" if campaign else (" in the global pool" if pool else "")
    typer.echo(f"approved caller ID {n}{where}")


@cid.command("remove")
def cid_remove(number: str, campaign: Optional[str] = typer.Option(None, "--campaign")):
    """Withdraw a caller ID (or take it out of one campaign's pool)."""
    n = _norm(number)
    if remote_write("/api/v1/callerids", {"action": "remove", "caller_id": n, "campaign": campaign}) is not None:
        return typer.echo(f"removed caller ID {n}" + (f" from campaign {campaign}'s pool" if campaign else ""))
    direct("callerid remove")
    run(lambda e: e.remove_caller_id(n, campaign))
    typer.echo(f"removed caller ID {n}" + (f" from campaign {campaign}'s pool" if campaign else ""))


@cid.command("list")
def cid_list(as_json: bool = typer.Option(False, "--json")):
    """Approved caller IDs: number (when a pool holds it sealed), pools, cool-down, pause."""
    from dialguard.decision.plan import ms

    async def go(e):
        approved = {t.decode() for t in await e.redis.smembers(e.keys.approved_cids)}
        numbers, pools = await _cid_directory(e)
        cool = {t.decode(): s for t, s in await e.redis.zrange(e.keys.cid_cooldown, 0, -1, withscores=True)}
        paused = {k.decode()[4:] for k in await e.redis.hkeys(e.keys.pause) if k.startswith(b"cid:")}
        whys = {t.decode(): v for t, v in (await e.redis.hgetall(e.keys.cid_cool_why)).items()}
        now = ms(await e.now())
        rows = []
        for tag in sorted(approved | set(pools), key=lambda t: (numbers.get(t) or "~", t)):
            cooling = cool.get(tag, 0) > now
            rows.append({"caller_id": numbers.get(tag), "hash": tag, "approved": tag in approved,
                         "pools": sorted(pools.get(tag, [])),
                         "cooldown_until": _iso(cool[tag]) if cooling else None,
                         "cooldown_reason": _cool_reason(whys.get(tag), cool.get(tag)) if cooling else None,
                         "paused": tag in paused})
        return rows

    rows = run(go)
    if as_json:
        print(json.dumps({"caller_ids": rows}))
        return
    if not rows:
        typer.echo("no approved caller ID")
    for r in rows:
        flags = ([] if r["approved"] else ["NOT approved"]) + (["paused"] if r["paused"] else []) + (
            [f"cooling down until {r['cooldown_until']}: {r['cooldown_reason']}"] if r["cooldown_until"] else [])
        typer.echo(f"{r['caller_id'] or 'hash ' + r['hash'][:12] + ' (number not in a pool)'}"
                   f"  pools: {', '.join(r['pools']) or '-'}" + (f"  ({'; '.join(flags)})" if flags else ""))


@cid.command("health")
def cid_health(as_json: bool = typer.Option(False, "--json"),
               full: bool = typer.Option(False, "--full", help="show whole numbers (masked by default)")):
    """Health of the pool caller IDs from their reported outcomes: answer rate,
    short answers, carrier rejections (rate and current run), complaints and
    opt-outs per 1,000 calls, cool-down."""
    from dialguard.callerid_health import report
    from dialguard.decision.plan import ms

    async def go(e):
        return await report(e, ms(await e.now()))

    rows = run(go)
    for r in rows:
        r["caller_id"] = r["caller_id"] if full else mask_number(r["caller_id"])
        r["cooldown_until"] = _iso(r["cooldown_until"]) if r["cooldown_until"] else None
    if as_json:
        print(json.dumps({"caller_ids": rows}))
        return
    if not rows:
        typer.echo("no caller ID in a pool")
        return
    typer.echo(f"{'caller ID':<16} {'calls':>5} {'answer':>7} {'short':>6} {'reject':>7} {'run':>4} "
               f"{'compl/1k':>8} {'optout/1k':>9} {'penalty':>7}  cool-down")
    for r in rows:
        f = r["figures"]
        cool = f"until {r['cooldown_until']}: {r['cooldown_reason']}" if r["cooldown_until"] else "-"
        typer.echo(f"{r['caller_id']:<16} {f['calls']:>5} {f['answer_rate']:>7.1%} {f['short_answer_rate']:>6.1%} "
                   f"{f['rejection_rate']:>7.1%} {f['run']:>4} {f['complaints_per_1000']:>8.1f} "
                   f"{f['optouts_per_1000']:>9.1f} {r['penalty']:>7.3f}  {cool}")


@cid.command("cooldown")
def cid_cooldown(number: str, until: str = typer.Option(..., "--until", help="ISO 8601 time with offset")):
    n = _norm(number)
    t = time_arg(until, "--until")
    if remote_write("/api/v1/callerids", {"action": "cooldown", "caller_id": n, "until": t.isoformat()}) is not None:
        return typer.echo(f"caller ID {n} cooling down until {t.isoformat()}")
    direct("callerid cooldown")
    run(lambda e: e.cooldown_caller_id(n, t))
    typer.echo(f"caller ID {n} cooling down until {t.isoformat()}")


def _remote_event(kind: str, number: str | None, party: str | None) -> bool:
    """With DIALGUARD_TOKEN: the event through the API as the token's user (supervisor or above); True if sent."""
    body = {"kind": kind, "number": _norm(number) if number else None}
    if party:
        body["party"] = party
    return remote_write("/api/v1/events", body) is not None


def _remote_killswitch(action: str, scope: str, name: str | None) -> bool:
    """With DIALGUARD_TOKEN: the change through the API as the token's user (dialguard/remote.py); True if sent."""
    from dialguard import remote

    if not remote.token():
        return False
    try:
        remote.killswitch(action, scope, name)
    except remote.RemoteError as exc:
        fail(str(exc), EXIT_DENIED if exc.status == 403 else EXIT_UNAVAILABLE if exc.status in (0, 503) else EXIT_BAD_INPUT)
    return True


def _done(as_json: bool, text: str, **fields):
    if as_json:
        print(json.dumps(fields))
    else:
        typer.echo(text)


def _run_plain(coro_fn):
    """Run coro_fn() (PostgreSQL only, no engine); map failures to exit codes."""
    try:
        return asyncio.run(coro_fn())
    except DncDbUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)


def _cool_reason(raw, until) -> str:
    """Why a caller ID cools down: the health rules that triggered (outcome.lua)
    when the record belongs to this cool-down, else an admin set it."""
    if raw:
        try:
            w = json.loads(raw)
            if until is not None and int(w.get("until", -1)) == int(until):
                return "health: " + "; ".join(
                    f"{t.get('rule')} ({t.get('metric')} {round(t['value'], 3) if isinstance(t.get('value'), float) else t.get('value')}"
                    f" vs {t.get('threshold')}, {t.get('calls')} calls)" for t in w.get("triggered", []))
        except (ValueError, TypeError):
            pass
    return "set by an admin"


def _iso(ms_text) -> str | None:
    try:
        return datetime.fromtimestamp(int(float(ms_text)) / 1000, timezone.utc).isoformat()
    except (TypeError, ValueError):
        return None


async def calendar_report(engine) -> list:
    """Until when every calendar of the rules in effect is known, at the engine's clock."""
    from dialguard.metrics import calendar_status
    return await calendar_status(engine)


def calendar_json(known) -> list[dict]:
    return [{"calendar": k.calendar, "known_until": k.last_day.isoformat() if k.last_day else None,
             "source": k.source, "seconds_left": k.seconds_left, "warn": k.warn} for k in known]


def print_calendars(known) -> None:
    """One line per calendar on stdout; a warning on stderr for each within 45 days of its end."""
    for k in known:
        until = k.last_day.isoformat() if k.last_day else "never"
        typer.echo(f"calendar {k.calendar}: known until {until} ({k.source}), "
                   f"{k.seconds_left / 86400:.1f} days left")
    for k in known:
        if k.warn:
            typer.echo(f"warning: {k.message()}", err=True)


def _show_paused(as_json: bool, calendars: bool = False) -> None:
    async def go(e):
        raw = {k.decode(): v.decode() for k, v in (await e.redis.hgetall(e.keys.pause)).items()}
        numbers = (await _cid_directory(e))[0] if any(k.startswith("cid:") for k in raw) else {}
        out = []
        for f, since in sorted(raw.items()):
            if f == "all":
                out.append({"scope": "all", "name": None, "since": _iso(since)})
            elif f.startswith("camp:"):
                out.append({"scope": "campaign", "name": f[5:], "since": _iso(since)})
            elif f.startswith("cid:"):
                tag = f[4:]
                out.append({"scope": "caller_id", "name": numbers.get(tag), "hash": tag, "since": _iso(since)})
        for r in await e.paused_regions():
            out.append({"scope": "region", "name": r["region"], "from": r["from"].isoformat() if r["from"] else None,
                        "until": r["until"].isoformat() if r["until"] else None, "why": r["why"]})
        return out, (await calendar_report(e) if calendars else None)

    paused, known = run(go)
    if as_json:
        print(json.dumps({"paused": paused, **({"calendars": calendar_json(known)} if calendars else {})}))
        return
    if calendars:
        print_calendars(known)
    if not paused:
        typer.echo("nothing is paused")
    for p in paused:
        if p["scope"] == "all":
            what = "all outbound calls"
        elif p["scope"] == "campaign":
            what = f"campaign {p['name']}"
        elif p["scope"] == "region":
            typer.echo(f"paused: calls into {p['name']} from {p['from'] or 'now'} "
                       f"{'until ' + p['until'] if p['until'] else '(no end)'}" + (f": {p['why']}" if p["why"] else ""))
            continue
        else:
            what = f"caller ID {p['name'] or 'hash ' + p['hash'][:12]}"
        typer.echo(f"paused: {what} since {p['since'] or '?'}")


def _pause_region(region, start, until, why, campaign, caller_id, as_json) -> None:
    """`pause --region`: a kill switch by jurisdiction with an effective window."""
    from dialguard import remote
    from dialguard.location import LocationError, parse_region

    if campaign or caller_id:
        fail("give --region alone (a region pause applies to every campaign)")
    try:
        code = parse_region(region)
    except LocationError as exc:
        fail(str(exc))
    if code is None:
        fail("--region needs an ISO 3166-2 code, e.g. US-LA")
    t0, t1 = time_arg(start, "--from"), time_arg(until, "--until")
    window = (f" from {t0.isoformat() if t0 else 'now'}" + (f" until {t1.isoformat()}" if t1 else " (no end)"))
    if remote.token():  # as the token's user, through the console (supervisor or above)
        r = remote_write("/api/v1/killswitch", {"action": "pause", "scope": "region", "name": code, "why": why,
                                                "from": t0.isoformat() if t0 else None,
                                                "until": t1.isoformat() if t1 else None})
        return _done(as_json, f"paused region {code}{window} (as {r['by']})", action="pause", scope="region",
                     name=code, **{"from": r["from"], "until": r["until"], "why": why, "by": r["by"]})
    direct("pause")
    try:
        run(lambda e: e.pause_region(code, t0, t1, why=why))
    except ValueError as exc:
        fail(str(exc))
    _done(as_json, f"paused region {code}{window}", action="pause", scope="region", name=code,
          **{"from": t0.isoformat() if t0 else None, "until": t1.isoformat() if t1 else None, "why": why})


def _scope(campaign, caller_id):
    if campaign and caller_id:
        fail("give --campaign or --caller-id, not both")
    if campaign:
        return "campaign", campaign
    if caller_id:
        return "caller_id", _norm(caller_id)
    return "all", None


def _norm(number: str) -> str:
    try:
        return normalize(number, Settings().default_region)
    except NumberError as exc:
        fail(str(exc))
