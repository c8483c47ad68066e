"""`dialguard` command line (typer + rich).

Exit codes: 0 ok; 1 the command ran and the answer is "no" (check denied);
2 bad input (rules file, scenario, number, arguments); 3 a service is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dialguard.config import ConfigError, Settings, require_secrets
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, RulesError, resolve_pack, shipped_packs

app = typer.Typer(help="dialguard: outbound-call compliance guard for Asterisk.", no_args_is_help=True,
                  add_completion=False)
rules_app = typer.Typer(help="Rule packs and published rules versions.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

from dialguard.cli import admin as cli_admin  # noqa: E402  (admin commands: pause, dnc, optout, ...)

cli_admin.register(app)

from dialguard.cli import rules as cli_rules  # noqa: E402  (rules apply/diff/history, override)

cli_rules.register(app, rules_app)

from dialguard.cli import calendar as cli_calendar  # noqa: E402  (calendar import/status/history/activate)

cli_calendar.register(app)

from dialguard.cli import campaigns as campaigns_cli  # noqa: E402  (dialer campaigns, leads, dialer run)

campaigns_cli.register(app)

from dialguard.cli import audit as audit_cli  # noqa: E402  (db, audit-ship, audit, report, counters)

audit_cli.register(app)

from dialguard.cli import install as cli_install  # noqa: E402  (install asterisk)

cli_install.register(app)

from dialguard.cli import loadtest as cli_loadtest  # noqa: E402  (loadtest)

cli_loadtest.register(app)

from dialguard.cli import users as cli_users  # noqa: E402  (user add/passwd/role/token)

cli_users.register(app)

from dialguard.web import cli as web_cli  # noqa: E402  (web: console and API)

web_cli.register(app)

out = Console()
err = Console(stderr=True, soft_wrap=True)  # errors stay on one line, whatever the width

# Commands that touch no number and so run without the secrets: `init` makes
# them, `db` manages the schema (a migration that must seal rows asks itself).
NO_SECRETS = {"init", "db"}


@app.callback()
def _main(ctx: typer.Context):
    """Every command but init and db refuses to start without a hash secret and a data key."""
    import os

    os.umask(0o077)  # files the CLI writes (exports, checkpoints, rejects, spool) are the owner's only
    if ctx.invoked_subcommand in NO_SECRETS or ctx.resilient_parsing or "--help" in sys.argv[1:]:
        return
    try:
        require_secrets(f"dialguard {ctx.invoked_subcommand}")
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2)


from dialguard.cli import init as cli_init  # noqa: E402  (dialguard init: secrets and Redis ACL users)

cli_init.register(app)

EXIT_DENIED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3


def fail(msg: str, code: int = EXIT_BAD_INPUT):
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


@app.command()
def simulate(scenario: Path = typer.Argument(..., help="Scenario YAML (SPEC §5)")):
    """Replay a scenario against rules in an isolated namespace; one JSON line per attempt."""
    from dialguard.simulate import ScenarioError, load_scenario, run_scenario
    from redis.exceptions import RedisError

    try:
        sc, policy = load_scenario(scenario)
    except ScenarioError as exc:
        fail(str(exc))
    try:
        asyncio.run(run_scenario(sc, policy, emit=lambda line: print(line, flush=True)))
    except (RedisError, OSError) as exc:
        fail(f"Redis unreachable at {Settings().redis_where()}: {exc} (start it with `make up` "
             f"or set DIALGUARD_REDIS_URL)", EXIT_UNAVAILABLE)


@app.command()
def check(
    number: str = typer.Argument(..., help="Number to call, any format"),
    campaign: str = typer.Option(..., "--campaign", "-c"),
    agent: str = typer.Option(..., "--agent", "-a"),
    caller_id: Optional[str] = typer.Option(None, "--caller-id"),
    subject: Optional[str] = typer.Option(None, "--subject"),
    at: Optional[str] = typer.Option(None, "--at", help="ISO 8601 time with offset (default: now)"),
    rules: Optional[str] = typer.Option(None, "--rules", help="Packs or files, comma-separated"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Decide one attempt against the live store, explaining each reason.

    A check is a real decision: when allowed, the attempt is counted.
    """
    from dialguard.engine import Engine, parse_time

    try:
        now = parse_time(at) if at else None
    except ValueError as exc:
        fail(f"--at: {exc}")
    settings = Settings()
    try:
        policy = Policy.load(rules or settings.rules)
    except RulesError as exc:
        fail(str(exc))

    async def run():
        # --rules names the rules to decide with; otherwise the published version applies
        engine = await Engine.create(settings, policy, versioned=rules is None)
        try:
            return await engine.decide(DecisionRequest(number=number, campaign=campaign, agent=agent,
                                                       caller_id=caller_id, subject=subject), now=now)
        finally:
            await engine.close()

    d = asyncio.run(run())
    if as_json:
        print(d.model_dump_json())
    else:
        color = "green" if d.allowed else "red"
        out.print(f"[bold {color}]{d.decision.upper()}[/] {d.number or number}  decision {d.decision_id}")
        if d.allowed:
            out.print(f"  caller ID: {d.caller_id or '(dialplan default)'}   max duration: "
                      f"{d.max_duration_s or 'none'}{'s' if d.max_duration_s else ''}")
        for r in d.reasons:
            out.print(f"  [bold]{r}[/]: {d.explanations.get(r, '')}", highlight=False)
        if not d.allowed:
            ne = d.next_eligible_at.isoformat() if d.next_eligible_at else "never (a permanent block) or unknown"
            out.print(f"  next eligible: {ne}")
    if d.reasons == ["guard_unavailable"]:
        raise typer.Exit(EXIT_UNAVAILABLE)
    raise typer.Exit(0 if d.allowed else EXIT_DENIED)


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


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
