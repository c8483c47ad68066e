"""Imported calendars: `dialguard calendar import|status|history|activate` (issue 12, SPEC §9).

Exit codes (dialguard/cli/common.py): 0 ok; 2 bad input (a file that cannot be
accounted for, with its line; an unknown version); 3 Redis unreachable.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from dialguard.cli.common import direct, fail, out, remote_write, run
from dialguard.timerules import package_changes

app = typer.Typer()
calendar_app = typer.Typer(help="Calendars as data: import a year, roll back (SPEC §9).", no_args_is_help=True)
app.add_typer(calendar_app, name="calendar")


def _store(engine):
    from dialguard.calendars import CalendarStore
    return CalendarStore(engine.redis, engine.keys, engine.settings.node)


def _at(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat() if ms else None


def _year_rows(cals, active_codes) -> list[dict]:
    from dialguard.calendars import package_last_year

    rows = []
    for f in cals.files:
        last = package_last_year(f.calendar)
        pkg = last is None or f.year <= last  # the holidays package computes every year
        rows.append({"calendar": f.calendar, "year": f.year, "holidays": len(f.holidays),
                     "working_days": len(f.working_days), "source": f.source,
                     "overrides_package": pkg, "used_by_rules": f.calendar in active_codes})
    return rows


@calendar_app.command("import")
def calendar_import(code: str = typer.Argument(..., help="Calendar: cn, or a country or subdivision (us-la)"),
                    file: Path = typer.Argument(..., help="Calendar file (YAML, SPEC §9) or, for cn, the State "
                                                          "Council's notice text (UTF-8)"),
                    dry_run: bool = typer.Option(False, "--dry-run", help="Show the days read; publish nothing"),
                    why: str = typer.Option("", "--why", help="Reason, kept in the audit"),
                    as_json: bool = typer.Option(False, "--json")):
    """Read a year of a calendar, show its days, and publish it to every node (a new calendar version)."""
    from dialguard.calendar_file import CalendarFileError
    from dialguard.calendars import _file_json, describe, read_file

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{file}: not UTF-8 text")
    try:
        cf = read_file(text, code)
    except (CalendarFileError, ValueError) as exc:
        fail(f"{file}: {exc}; nothing published")
    known, changed = package_changes(cf)
    result = {"calendar": _file_json(cf), "package_knows_year": known,
              "changes": [{"day": d.isoformat(), "package": "working" if a else "off",
                           "file": "working" if b else "off"} for d, a, b in changed]}
    if not as_json:
        for line in describe(cf):
            out.print(line, highlight=False, markup=False)
        if known:
            how = ("this file overrides it" if cf.calendar == "CN"
                   else "this file's days go on top of the holidays package")
            out.print(f"the packaged data knows {cf.year}: {how} ({len(changed)} day(s) change)", highlight=False)
            for d, a, b in changed:
                out.print(f"  {d.isoformat()} {d.strftime('%a')}: {'working' if a else 'off'} -> "
                          f"{'working' if b else 'off'}", highlight=False)
    if dry_run:
        if as_json:
            print(json.dumps({**result, "published": False}, ensure_ascii=False))
        else:
            out.print("dry run: nothing published")
        return
    r = remote_write("/api/v1/calendars", {"action": "import", "code": code, "text": text, "why": why})
    if r is not None:  # as the token's user (compliance or above), through the console's API
        if as_json:
            print(json.dumps({**result, "published": r["published"], "version": r["version"], "by": r["by"]},
                             ensure_ascii=False))
        else:
            out.print(f"calendar version {r['version']} {'is now in effect' if r['published'] else 'unchanged'}"
                      f", by {r['by']}", highlight=False)
        return
    direct("calendar import")
    n, new = run(lambda engine: _store(engine).import_file(cf, why=why))
    if as_json:
        print(json.dumps({**result, "published": new, "version": n}, ensure_ascii=False))
    elif new:
        out.print(f"[bold green]calendar version {n}[/] is now in effect on every node "
                  f"({cf.calendar} {cf.year} imported)", highlight=False)
    else:
        out.print(f"unchanged: calendar version {n} already holds this {cf.calendar} {cf.year}", highlight=False)


@calendar_app.command("status")
def calendar_status(as_json: bool = typer.Option(False, "--json")):
    """The calendar version in effect, its years, and until when each calendar the rules use is known."""
    from dialguard.calendars import calendars_used, code_of, horizons

    async def go(engine):
        cals = await _store(engine).current()
        active = await engine.redis.hget(engine.keys.rules, "active")
        policy = await engine._version(active.decode()) if active else engine.policy
        return cals, policy

    cals, policy = run(go)
    used = [code_of(c) for c in calendars_used(policy)]
    until = horizons(policy, cals)
    unknown_year = {code_of(c): c.unknown_year for c in calendars_used(policy)}
    rows = _year_rows(cals, set(used))
    if as_json:
        print(json.dumps({"version": cals.version or None, "actor": cals.actor, "why": cals.why, "at": _at(cals.at),
                          "years": rows, "rules": policy.name,
                          "calendars": {c: {"known_until": until[c].isoformat() if until[c] else None,
                                            "unknown_year": unknown_year[c]} for c in used}},
                         ensure_ascii=False))
        return
    if cals.version:
        out.print(f"calendar version {cals.version} by {cals.actor or '?'}{': ' + cals.why if cals.why else ''}",
                  highlight=False)
    else:
        out.print("no calendar imported: the packaged data only", highlight=False)
    for r in rows:
        if r["calendar"] != "CN":
            note = "imported, on top of the holidays package"
        elif r["overrides_package"]:
            note = "imported, overrides the packaged data (the imported year wins)"
        else:
            note = "imported (the packaged data does not know it)"
        out.print(f"  {r['calendar']} {r['year']}: {r['holidays']} holiday(s), {r['working_days']} working day(s), "
                  f"{note}{' — ' + r['source'] if r['source'] else ''}", highlight=False)
    for c in used:
        end = until[c]
        out.print(f"rules {policy.name} use {c}: known until {end.isoformat() if end else 'no end (computed)'}; "
                  f"after that unknown_year {unknown_year[c]}", highlight=False)


@calendar_app.command("history")
def calendar_history(as_json: bool = typer.Option(False, "--json")):
    """Every calendar version, oldest first."""
    from rich.table import Table

    async def go(engine):
        store = _store(engine)
        return await store.history(), await store.active_version()

    versions, active = run(go)
    rows = [{"version": v.version, "active": v.version == active,
             "years": [f"{f.calendar} {f.year}" for f in v.files], "hash": v.hash, "actor": v.actor,
             "why": v.why, "at": _at(v.at)} for v in versions]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    t = Table("version", "in effect", "years", "hash", "by", "at", "why")
    for r in rows:
        t.add_row(str(r["version"]), "active" if r["active"] else "", ", ".join(r["years"]), r["hash"], r["actor"],
                  r["at"] or "", r["why"])
    out.print(t)


@calendar_app.command("activate")
def calendar_activate(version: int = typer.Argument(..., help="A stored version (see `calendar history`)"),
                      why: str = typer.Option("", "--why")):
    """Put a stored calendar version back in effect (roll back or forward), on the next decision of every node."""
    r = remote_write("/api/v1/calendars", {"action": "activate", "version": version, "why": why})
    if r is not None:
        out.print(f"calendar version {r['version']} is now in effect, by {r['by']}", highlight=False)
        return
    direct("calendar activate")
    async def go(engine):
        from redis.exceptions import ResponseError

        try:
            return await _store(engine).activate(version, why=why)
        except ResponseError as exc:
            raise ValueError(f"{exc}; see `dialguard calendar history`") from None

    n = run(go)
    out.print(f"calendar version {n} is now in effect", highlight=False)
