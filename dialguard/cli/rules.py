"""Rules: the shipped packs (`dialguard rules validate|show|list`), published
versions (`rules apply|activate|shadow-off|diff|history|status`) and overrides
(`dialguard override grant|show|revoke`).

Exit codes (dialguard/cli/common.py): 0 ok; 1 the answer is "no" (`rules diff`: the
rules differ, as diff(1)); 2 bad input; 3 Redis unreachable.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Optional

import typer
from rich.table import Table

from dialguard.cli.admin import calendar_json, calendar_report, print_calendars
from dialguard.cli.common import EXIT_BAD_INPUT, direct, err, fail, out, remote_write, run, time_arg
from dialguard.config import Settings
from dialguard.rules import RulesError, resolve_pack, shipped_packs

app = typer.Typer()
rules_app = typer.Typer(help="Rule packs and published rules versions.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
override_app = typer.Typer(help="One-time, audited exceptions for a number (SPEC §2).", no_args_is_help=True)
MAX_OVERRIDE = timedelta(days=30)  # a forgotten grant must not live for ever


def _store(engine):
    from dialguard.rules_store import RulesStore
    return RulesStore(engine.redis, engine.keys, engine.settings.node)


def _bundle(spec: str):
    """(policy, bundle) of packs or files, or a clear error (exit 2)."""
    from dialguard.rules_store import bundle

    try:
        return bundle(spec)
    except RulesError as exc:
        fail(str(exc))


def _version_dict(v, role: str | None = None) -> dict:
    return {"version": v.version, "role": role, "name": v.name, "hash": v.hash, "spec": v.spec,
            "actor": v.actor, "why": v.why,
            "at": datetime.fromtimestamp(v.at / 1000).astimezone().isoformat() if v.at else None}


app.add_typer(override_app, name="override")


@rules_app.command("apply")
def rules_apply(spec: str = typer.Argument(..., help="Packs or rules files, comma-separated"),
                shadow: bool = typer.Option(False, "--shadow",
                                            help="Evaluate beside the active rules, never enforce"),
                why: str = typer.Option("", "--why", help="Reason, kept in the audit"),
                as_json: bool = typer.Option(False, "--json")):
    """Publish rules as a new version, in effect on the next decision of every node."""
    from dialguard.rules_store import diff

    new_policy, b = _bundle(spec)  # the files read and checked once
    r = remote_write("/api/v1/rules", {"action": "apply", "files": b["files"], "shadow": shadow, "why": why})
    if r is not None:  # as the token's user (compliance or above), through the console's API
        if as_json:
            print(json.dumps({k: r[k] for k in ("version", "role", "changed", "by")}))
        else:
            out.print(f"version {r['version']} is the {r['role']} rules"
                      f"{'' if r['changed'] else ' (unchanged)'}, by {r['by']}", highlight=False)
        return
    direct("rules apply")

    async def go(engine):
        store = _store(engine)
        cur = await store.current("shadow" if shadow else "active")
        n, changed = await store.apply_bundle(b, shadow=shadow, why=why)
        return n, changed, cur

    n, changed, cur = run(go)
    role = "shadow" if shadow else "active"
    if as_json:
        print(json.dumps({"version": n, "role": role, "changed": changed, "previous": cur.version if cur else None}))
        return
    if not changed:
        out.print(f"unchanged: these rules are already the {role} version {n}", highlight=False)
        return
    if cur:
        out.print(diff(cur.policy(), new_policy, f"version {cur.version}", f"version {n}") or "(same content)",
                  highlight=False, markup=False)
    out.print(f"[bold green]version {n}[/] is now the {role} rules ({new_policy.name}, {new_policy.version_hash})",
              highlight=False)


@rules_app.command("activate")
def rules_activate(version: int = typer.Argument(..., help="A stored version (see `rules history`)"),
                   shadow: bool = typer.Option(False, "--shadow"),
                   why: str = typer.Option("", "--why")):
    """Put a stored version back in effect (roll back or forward)."""
    r = remote_write("/api/v1/rules", {"action": "activate", "version": version, "shadow": shadow, "why": why})
    if r is not None:
        out.print(f"version {r['version']} is now the {r['role']} rules, by {r['by']}", highlight=False)
        return
    direct("rules activate")
    async def go(engine):
        from redis.exceptions import ResponseError

        try:
            return await _store(engine).activate(version, shadow=shadow, why=why)
        except ResponseError as exc:
            raise ValueError(f"{exc}; see `dialguard rules history`") from None

    n = run(go)
    out.print(f"version {n} is now the {'shadow' if shadow else 'active'} rules", highlight=False)


@rules_app.command("shadow-off")
def rules_shadow_off(why: str = typer.Option("", "--why")):
    """Stop evaluating the shadow rules."""
    r = remote_write("/api/v1/rules", {"action": "shadow_off", "why": why})
    if r is not None:
        out.print(("shadow rules off" if r["shadow_off"] else "no shadow rules were set") + f", by {r['by']}",
                  highlight=False)
        return
    direct("rules shadow-off")
    had = run(lambda engine: _store(engine).shadow_off(why=why))
    out.print("shadow rules off" if had else "no shadow rules were set")


@rules_app.command("status")
def rules_status(as_json: bool = typer.Option(False, "--json")):
    """The rules versions in effect (active and shadow), and until when their
    calendars are known (a warning within 45 days of the end)."""
    async def go(engine):
        store = _store(engine)
        return (await store.current("active"), await store.current("shadow"), engine.settings.rules,
                await calendar_report(engine))

    active, shadow, configured, known = run(go)
    if as_json:
        print(json.dumps({"active": _version_dict(active, "active") if active else None,
                          "shadow": _version_dict(shadow, "shadow") if shadow else None,
                          "configured": configured, "calendars": calendar_json(known)}))
        return
    if active:
        out.print(f"active: version {active.version} {active.name} ({active.hash}) by {active.actor or '?'}"
                  f"{': ' + active.why if active.why else ''}", highlight=False)
    else:
        out.print(f"active: none published; each node enforces its configured rules ({configured})",
                  highlight=False)
    out.print(f"shadow: version {shadow.version} {shadow.name} ({shadow.hash})" if shadow else "shadow: none",
              highlight=False)
    print_calendars(known)


@rules_app.command("history")
def rules_history(as_json: bool = typer.Option(False, "--json")):
    """Every published version, oldest first."""
    from rich.table import Table

    async def go(engine):
        store = _store(engine)
        return await store.history(), await store.in_effect()

    versions, (active, shadow) = run(go)
    role = {active: "active", shadow: "shadow"}
    if as_json:
        print(json.dumps([_version_dict(v, role.get(v.version)) for v in versions]))
        return
    t = Table("version", "in effect", "packs", "hash", "by", "at", "why")
    for v in versions:
        d = _version_dict(v, role.get(v.version))
        t.add_row(str(v.version), d["role"] or "", v.name, v.hash, v.actor, d["at"] or "", v.why)
    out.print(t)


@rules_app.command("diff")
def rules_diff(spec: Optional[str] = typer.Argument(None, help="Packs or files to compare with"),
               from_version: Optional[int] = typer.Option(None, "--from", help="Version (default: active)"),
               to_version: Optional[int] = typer.Option(None, "--to", help="Version instead of SPEC")):
    """What would change: the active version (or --from) against files (or --to).
    Exit 0 when identical, 1 when they differ."""
    from dialguard.rules_store import diff

    if (spec is None) == (to_version is None):
        fail("give either packs/files to compare with, or --to VERSION")
    new = _bundle(spec)[0] if spec is not None else None

    async def go(engine):
        store = _store(engine)
        old = await (store.get(from_version) if from_version else store.current("active"))
        to = await store.get(to_version) if to_version else None
        return old, to

    old, to = run(go)
    if from_version and old is None:
        fail(f"no rules version {from_version}; see `dialguard rules history`")
    if to_version and to is None:
        fail(f"no rules version {to_version}; see `dialguard rules history`")
    old_name = f"version {old.version}" if old else "(no version published)"
    text = diff(old.policy() if old else None, to.policy() if to else new, old_name,
                f"version {to.version}" if to else spec)
    if text:
        print(text, end="")
    raise typer.Exit(1 if text else 0)


@override_app.command("grant")
def override_grant(number: str = typer.Argument(...),
                   reason: str = typer.Option(..., "--reason", help="Why (kept in the audit)"),
                   approver: Optional[str] = typer.Option(
                       None, "--approver", help="A name declared for the record (kept in the reason, not "
                                                "proof: the audited approver is break-glass:<OS user>; "
                                                "four eyes: `dialguard request override`)"),
                   expires: str = typer.Option("24h", "--expires", help="Duration (24h, 2d) or ISO time"),
                   campaign: Optional[str] = typer.Option(None, "--campaign", help="Only for this campaign"),
                   lift: Optional[list[str]] = typer.Option(None, "--lift",
                                                           help="Only these reasons (repeat); default: every "
                                                                "counter and hours reason"),
                   as_json: bool = typer.Option(False, "--json")):
    """Break-glass only: allow the number's next call once despite counter or hours reasons.
    Never lifts dnc, opted_out, complained or invalid_number. The everyday way is four
    eyes: `dialguard request override` and another user's `dialguard request approve`."""
    from dialguard.ids import actor
    from dialguard.rules import parse_duration

    direct("override grant")

    async def go(engine):
        now = await engine.now()
        try:
            until = now + parse_duration(expires)
        except (RulesError, ValueError):
            until = time_arg(expires, "--expires")
        if until - now > MAX_OVERRIDE:
            raise ValueError(f"--expires: at most {MAX_OVERRIDE.days} days ahead")
        why = reason + (f" (approval declared: {approver})" if approver else "")
        gid = await engine.override_grant(number, why=why, approver=actor(), expires=until,
                                          campaign=campaign, lifts=lift or None, now=now)
        return gid, until

    gid, until = run(go)
    if as_json:
        print(json.dumps({"id": gid, "expires_at": until.isoformat()}))
    else:
        out.print(f"override {gid} granted until {until.isoformat()} (used by the next eligible call)",
                             highlight=False)


@override_app.command("show")
def override_show(number: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """The unused grant for a number, if any (exit 1 when there is none)."""
    g = run(lambda engine: engine.override_get(number))
    if as_json:
        print(json.dumps(g))
    elif g:
        lifts = ", ".join(g["lifts"]) if g["lifts"] else "every counter and hours reason"
        out.print(f"override {g['id']} until {g['expires_at']}, lifts {lifts}"
                             f"{', campaign-scoped' if g['campaign_tag'] else ''}", highlight=False)
    else:
        out.print("no unused override for this number")
    raise typer.Exit(0 if g else 1)


@override_app.command("revoke")
def override_revoke(number: str = typer.Argument(...), reason: str = typer.Option("", "--reason")):
    """Withdraw an unused grant (exit 1 when there was none)."""
    from dialguard import remote

    if remote.token():  # as the token's user, through the console (supervisor or above)
        from dialguard.numbers import NumberError, normalize
        try:
            n = normalize(number, Settings().default_region)
        except NumberError as exc:
            fail(str(exc))
        r = remote_write("/api/v1/overrides/revoke", {"number": n, "why": reason})
        out.print(f"override revoked (as {r['by']})", highlight=False)
        raise typer.Exit(0)
    direct("override revoke")
    had = run(lambda engine: engine.override_revoke(number, why=reason))
    out.print("override revoked" if had else "no unused override for this number")
    raise typer.Exit(0 if had else 1)


@rules_app.command("validate")
def rules_validate(refs: list[str] = typer.Argument(..., help="Pack names or rules files")):
    """Validate rules files; errors name the file, the path inside it and the problem."""
    bad = 0
    for ref in refs:
        try:
            p = resolve_pack(ref)
            out.print(f"[green]ok[/] {ref}: pack {p.pack} version {p.version}", highlight=False)
            if p.calendar and p.calendar.unknown_year != "deny":
                days = ("Monday to Friday are estimated as working days"
                        if p.calendar.unknown_year == "weekdays" else "every day is a calling day")
                err.print(f"[yellow]warning[/] {ref}: calendar unknown_year {p.calendar.unknown_year}: in a year the "
                          f"calendar data does not know, {days}: an estimate, not the official calendar "
                          "(decisions taken so are marked in the audit; import the year with "
                          "`dialguard calendar import`)", highlight=False)
        except RulesError as exc:
            err.print(f"[red]invalid[/] {exc}", highlight=False)
            bad += 1
    raise typer.Exit(EXIT_BAD_INPUT if bad else 0)


@rules_app.command("show")
def rules_show(ref: str = typer.Argument(..., help="Pack name or rules file"),
               as_json: bool = typer.Option(False, "--json")):
    """Show a pack: its limits in words and the legal sources it implements."""
    try:
        p = resolve_pack(ref)
    except RulesError as exc:
        fail(str(exc))
    if as_json:
        print(p.model_dump_json(indent=2))
        return
    out.print(f"[bold]{p.pack}[/] v{p.version} — {p.title}", highlight=False)
    t = Table("rule", "limit")
    if p.hours:
        days = ", ".join(f"{d} " + " ".join(f"{i.start:%H:%M}-{'24:00' if i.end_of_day else format(i.end, '%H:%M')}"
                                              for i in ivs) for d, ivs in p.hours.weekly.items() if ivs)
        t.add_row("hours", f"{days} ({p.hours.zone} time)")
    if p.calendar:
        where = p.calendar.country + (f"-{p.calendar.subdivision}" if p.calendar.subdivision else "")
        t.add_row("calendar", f"{where} {p.calendar.mode}, unknown year: {p.calendar.unknown_year}"
                              f"; {_calendar_state(p.calendar)}")
    for c in p.caps:
        unc = f", not counting {', '.join(c.uncounted_outcomes)}" if c.uncounted_outcomes else ""
        t.add_row(f"cap {c.id}", f"at most {c.max} per {c.window.describe()} ({c.scope}){unc}")
    if p.min_interval:
        t.add_row("min interval", str(p.min_interval))
    if p.quiet_after_conversation:
        q = p.quiet_after_conversation
        t.add_row("quiet after conversation", f"{q.window.describe()} ({q.scope})")
    if p.quiet_after_abandon:
        q = p.quiet_after_abandon
        t.add_row("quiet after abandon", f"abandoned {q.abandoned}, answering machine {q.amd}")
    if p.agent and p.agent.per_day is not None:
        t.add_row("agent", f"at most {p.agent.per_day} per day")
    if p.caller_id:
        c = p.caller_id
        t.add_row("caller ID", f"approved only: {c.require_approved}; per minute {c.per_minute}, per hour "
                               f"{c.per_hour}, per day {c.per_day}, concurrency {c.concurrency}")
        h = c.health
        if h:
            from dialguard.rules import _fmt_td

            t.add_row("caller-ID health", f"last {h.window_calls} calls within {h.window_hours} h; short answer "
                                          f"< {h.short_answer_s} s; carrier rejection: SIP "
                                          f"{', '.join(map(str, h.rejection_sip_codes))} (else Q.850 "
                                          f"{', '.join(map(str, h.rejection_causes))})")
            for r in h.rules:
                cond = (f"answer rate < {r.threshold:g} x the pool median" if r.metric == "answer_rate_vs_pool"
                        else f"{r.metric} >= {r.threshold:g}")
                t.add_row(f"health {r.id}", f"{cond}" + (f" over >= {r.min_calls} calls" if r.min_calls else "")
                          + f": cool down {_fmt_td(r.cool_down)}" + (f" — {r.note}" if r.note else ""))
    for code, names in sorted(p.states.items()):
        t.add_row(f"state US-{code}", f"the callee may be in it: {', '.join(names)}")
    if p.states:
        t.add_row("no state known", "every pack above" if p.unplaced == "all" else "none of them")
    if p.max_duration_s:
        t.add_row("max duration", f"{p.max_duration_s}s")
    if p.consent_required:
        t.add_row("consent", "required")
    if p.abandon_rate:
        t.add_row("abandon rate", f"≤ {p.abandon_rate.max_pct}% of {p.abandon_rate.base} per {p.abandon_rate.period}"
                                  " (tracked by the dialer)")
    out.print(t)
    out.print("[bold]Sources[/]")
    for s in p.sources:
        out.print(f"  • {s}", highlight=False)
    for n in p.notes:
        out.print(f"  note: {n}", highlight=False)


def _calendar_state(cal) -> str:
    """Until when the calendar is known, with the years imported on the live store
    (`dialguard calendar import`); the packaged data alone when Redis does not answer."""
    from dialguard.calendars import NO_CALENDARS, code_of, known_until, package_last_year

    code = code_of(cal)
    try:
        async def imported():
            from dialguard import redisconn
            from dialguard.calendars import CalendarStore
            from dialguard.decision.keys import Keys

            settings = Settings()
            r = redisconn.async_redis(settings, max_connections=2, timeout=1)
            try:
                return await CalendarStore(r, Keys(settings.key_prefix, settings.hash_secret)).current()
            finally:
                await r.aclose()

        cals, note = asyncio.run(imported()), ""
    except Exception as exc:  # noqa: BLE001 - rules show works offline
        cals, note = NO_CALENDARS, f" (imported calendars not read: {type(exc).__name__})"
    years = cals.years(code)
    last = package_last_year(code)
    end = known_until(code, cals)
    parts = [f"known until {end.isoformat()}" if end else "computed for every year"]
    if years:
        over = [y for y in years if last is None or y <= last]
        parts.append(f"imported {', '.join(map(str, years))} (calendar version {cals.version}"
                     f"{'; overrides the packaged ' + ', '.join(map(str, over)) if over else ''})")
    return "; ".join(parts) + note


@rules_app.command("list")
def rules_list():
    """List the shipped rule packs."""
    for name in shipped_packs():
        out.print(name)
