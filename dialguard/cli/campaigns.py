"""`dialguard campaign ...` (dialer campaigns in PostgreSQL) and `dialguard dialer run`.

The `campaign` group holds both the engine's Redis approval and the dialer's
campaigns; `approve` and `revoke` keep the PostgreSQL campaign record and the
engine's approval in agreement:
approve = PostgreSQL first, then Engine.set_campaign; revoke = the engine first
(the enforcement point), then PostgreSQL. A campaign that exists only for the
dialplan (never created here) is approved in the engine alone, as before.
The dialer dials only a campaign approved and running in PostgreSQL, and every
call is still decided by the engine, so a disagreement can only stop calls.

Exit codes (dialguard/cli/common.py): 0 ok, 2 bad input (an unknown campaign or
lead, a bad option), 3 PostgreSQL or Redis unreachable or not migrated.
Read commands (`campaign list`, `campaign status`) take --json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from dialguard.campaigns.disposition import parse_disposition
from dialguard.cli.common import EXIT_UNAVAILABLE, direct, fail, remote_write, run, time_arg
from dialguard.config import Settings

PACING_HELP = "progressive (one line per ready agent), predictive (dial ahead), preview (agent accepts first)"
WRAP_HELP = "seconds of wrap-up after each call (0-3600)"
RETRY_HELP = "per outcome OUTCOME=DELAY/MAX, e.g. busy=5m/3,no_answer=1h/4,abandoned=3d/1,amd=1d/2"
AMD_HELP = "answering-machine detection (Asterisk AMD) before any agent; machines are never bridged"
AMD_MEDIA_HELP = "what a machine hears with --amd-action message, e.g. sound:custom/spring-machine"


def _store_run(fn, missing_ok: bool = False):
    """Run fn(store) against PostgreSQL; map failures to exit codes. With
    missing_ok, a database without the dialer's tables gives None (engine-only
    campaigns) instead of an error."""
    import psycopg
    from psycopg_pool import PoolTimeout

    from dialguard.campaigns.store import CampaignError, SchemaMissing, Store

    settings = Settings()

    async def go():
        try:
            store = await Store.open(settings.pg_dsn, max_size=2, probe=True)
        except SchemaMissing:
            if missing_ok:
                return None
            raise
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (CampaignError, ValueError) as exc:
        fail(str(exc))
    except SchemaMissing as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
        from dialguard.audit.db import first_line, redact

        fail(f"PostgreSQL unreachable at {redact(settings.pg_dsn)}: {first_line(exc)}", EXIT_UNAVAILABLE)


app = typer.Typer()
camp = typer.Typer(help="Campaigns: approval (engine and dialer), dialer campaigns, leads.", no_args_is_help=True)
app.add_typer(camp, name="campaign")


ABANDON_HELP = ("the abandon message: sound:/path/on/the/asterisk/host/without/extension (or sound:NAME); it "
                "must name the seller and give a number to opt out (47 CFR 64.1200(a)(7)(i)(A))")


def _check_settings(optout_key: str | None, abandon_message: str | None) -> None:
    if optout_key is not None and (len(optout_key) != 1 or optout_key not in "0123456789*#"):
        fail("--optout-key must be one DTMF digit (0-9, *, #)")
    if abandon_message:
        from dialguard.campaigns.store import CampaignError, check_media
        try:
            check_media(abandon_message)
        except CampaignError as exc:
            fail(str(exc))


@camp.command("create")
def create(name: str,
           max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent"),
           cps: Optional[float] = typer.Option(None, "--cps", help="calls per second"),
           dial_ratio: Optional[float] = typer.Option(None, "--dial-ratio", help="calls per free agent"),
           abandon_limit: Optional[float] = typer.Option(None, "--abandon-limit", help="percent per day"),
           max_attempts: Optional[int] = typer.Option(None, "--max-attempts"),
           retry_after: Optional[int] = typer.Option(None, "--retry-after", help="seconds before a retry"),
           ring_timeout: Optional[int] = typer.Option(None, "--ring-timeout", help="seconds"),
           optout_key: Optional[str] = typer.Option(None, "--optout-key", help="DTMF digit"),
           dialer: Optional[str] = typer.Option(None, "--dialer",
                                                help="only this dialer (Stasis app name) runs it; default: any"),
           abandon_message: Optional[str] = typer.Option(None, "--abandon-message", help=ABANDON_HELP),
           pacing: Optional[str] = typer.Option(None, "--pacing", help=PACING_HELP),
           wrap_up: Optional[int] = typer.Option(None, "--wrap-up", help=WRAP_HELP),
           retry: Optional[str] = typer.Option(None, "--retry", help=RETRY_HELP),
           amd: Optional[bool] = typer.Option(None, "--amd/--no-amd", help=AMD_HELP),
           amd_action: Optional[str] = typer.Option(None, "--amd-action", help="hangup | message"),
           amd_media: Optional[str] = typer.Option(None, "--amd-media", help=AMD_MEDIA_HELP),
           as_json: bool = typer.Option(False, "--json")):
    """Create a dialer campaign (draft: it dials only once approved and started)."""
    _check_settings(optout_key, abandon_message)
    _check_pacing(pacing, retry, amd_action, amd_media)
    c = _store_run(lambda s: s.create_campaign(
        name, max_concurrent=max_concurrent, calls_per_second=cps, dial_ratio=dial_ratio,
        abandon_limit_pct=abandon_limit, max_attempts=max_attempts, retry_after_s=retry_after,
        ring_timeout_s=ring_timeout, optout_key=optout_key, dialer=dialer, abandon_media=abandon_message,
        pacing_mode=pacing, wrap_up_s=wrap_up, retry_rules=_norm_retry(retry), amd=amd, amd_action=amd_action,
        amd_media=amd_media))
    _show(c, {}, as_json)


@camp.command("edit")
def edit(name: str,
         max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent"),
         cps: Optional[float] = typer.Option(None, "--cps", help="calls per second"),
         dial_ratio: Optional[float] = typer.Option(None, "--dial-ratio", help="calls per free agent"),
         abandon_limit: Optional[float] = typer.Option(None, "--abandon-limit", help="percent per day"),
         max_attempts: Optional[int] = typer.Option(None, "--max-attempts"),
         retry_after: Optional[int] = typer.Option(None, "--retry-after", help="seconds before a retry"),
         ring_timeout: Optional[int] = typer.Option(None, "--ring-timeout", help="seconds"),
         optout_key: Optional[str] = typer.Option(None, "--optout-key", help="DTMF digit"),
         dialer: Optional[str] = typer.Option(None, "--dialer", help="only this dialer runs it; '' for any"),
         abandon_message: Optional[str] = typer.Option(None, "--abandon-message",
                                                       help=ABANDON_HELP + "; '' for the dialer's default"),
         as_json: bool = typer.Option(False, "--json")):
    """Change a campaign's settings (those given); a running dialer applies them within a second."""
    _check_settings(optout_key, abandon_message or None)
    c = _store_run(lambda s: s.edit_campaign(
        name, max_concurrent=max_concurrent, calls_per_second=cps, dial_ratio=dial_ratio,
        abandon_limit_pct=abandon_limit, max_attempts=max_attempts, retry_after_s=retry_after,
        ring_timeout_s=ring_timeout, optout_key=optout_key, dialer=dialer, abandon_media=abandon_message))
    _show(c, {}, as_json)


@camp.command("pacing")
def pacing_(name: str,
            mode: Optional[str] = typer.Option(None, "--mode", help=PACING_HELP),
            dial_ratio: Optional[float] = typer.Option(None, "--dial-ratio", help="predictive: most lines per agent"),
            wrap_up: Optional[int] = typer.Option(None, "--wrap-up", help=WRAP_HELP),
            retry: Optional[str] = typer.Option(None, "--retry", help=RETRY_HELP),
            amd: Optional[bool] = typer.Option(None, "--amd/--no-amd", help=AMD_HELP),
            amd_action: Optional[str] = typer.Option(None, "--amd-action", help="hangup | message"),
            amd_media: Optional[str] = typer.Option(None, "--amd-media", help=AMD_MEDIA_HELP),
            as_json: bool = typer.Option(False, "--json")):
    """Change a campaign's pacing: mode, dial ratio, agents' wrap-up, retry rules by outcome,
    answering-machine detection (a running dialer takes them within a second)."""
    _check_pacing(mode, retry, amd_action, amd_media)
    c = _store_run(lambda s: s.update_campaign(name, pacing_mode=mode, dial_ratio=dial_ratio, wrap_up_s=wrap_up,
                                               retry_rules=_norm_retry(retry), amd=amd, amd_action=amd_action,
                                               amd_media=amd_media))
    _show(c, {}, as_json)


@camp.command("lead")
def lead_(lead_id: int,
          priority: Optional[int] = typer.Option(None, "--priority", help="higher first among due leads"),
          callback: Optional[str] = typer.Option(None, "--callback", help="call again at (ISO 8601, offset)"),
          agent: Optional[str] = typer.Option(None, "--agent", help="the callback's owner: only this agent"),
          any_agent: bool = typer.Option(False, "--any-agent", help="no owner any more")):
    """A lead's priority, or a callback at a time owned by one agent."""
    if agent is not None and any_agent:
        fail("--agent and --any-agent exclude each other")
    at = time_arg(callback, "--callback") if callback else None
    row = _store_run(lambda s: s.set_lead(lead_id, priority=priority, owner_agent=agent, callback_at=at,
                                          clear_owner=any_agent))
    if row is None:
        fail(f"lead {lead_id} does not exist")
    typer.echo(f"lead {lead_id}: priority {row['priority']}, state {row['state']}, next "
               f"{row['next_eligible_at'].isoformat()}, owner {row['owner_agent'] or 'any agent'}")


agent_app = typer.Typer(help="Agents: state (logged in, ready, break) and preview.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")


@agent_app.command("state")
def agent_state_(name: str, state: str = typer.Argument(..., help="logged_out | ready | break")):
    """Set an agent's state. The dialer offers calls only to ready agents, and adds on_call
    and wrap_up itself (docs/DIALER.md, "Agent states")."""
    row = _store_run(lambda s: s.set_agent_state(name, state))
    typer.echo(f"agent {row['name']}: {row['state']}")


@agent_app.command("list")
def agent_list(as_json: bool = typer.Option(False, "--json")):
    """Agents' states as the CLI set them (an agent without one is ready)."""
    st = _store_run(lambda s: s.agent_states())
    if as_json:
        print(json.dumps({"agents": st}))
        return
    for n, v in sorted(st.items()):
        typer.echo(f"{n}: {v}")


@agent_app.command("preview")
def agent_preview(name: str, campaign: str = typer.Option(..., "--campaign"),
                  as_json: bool = typer.Option(False, "--json")):
    """Preview mode: the next lead for this agent, held until it accepts or skips it."""
    from datetime import timezone

    from dialguard.masking import mask_number

    row = _store_run(lambda s: s.preview_next(campaign, name, datetime.now(timezone.utc)))
    if row is None:
        fail(f"campaign {campaign}: no lead due to preview", 1)
    d = {"lead": row["id"], "name": row["name"], "subject": row["subject"],
         "number": mask_number(row["number"]), "attempts": row["attempts"], "last_result": row["last_result"]}
    if as_json:
        print(json.dumps(d, ensure_ascii=False))
    else:
        typer.echo(", ".join(f"{k} {v}" for k, v in d.items()))
        typer.echo(f"accept: dialguard agent accept {name} {row['id']}; skip: dialguard agent skip {name} {row['id']}")


def _answer_preview(name: str, lead_id: int, accept: bool):
    row = _store_run(lambda s: s.answer_preview(lead_id, name, accept))
    if row is None:
        fail(f"lead {lead_id} is not held for agent {name} (dialguard agent preview)")
    typer.echo(f"lead {lead_id}: " + (f"accepted, dialed for {name} once it is ready" if accept
                                       else "skipped, back to every agent"))


@agent_app.command("accept")
def agent_accept(name: str, lead_id: int):
    """Preview mode: dial the previewed lead for this agent."""
    _answer_preview(name, lead_id, True)


@agent_app.command("skip")
def agent_skip(name: str, lead_id: int):
    """Preview mode: give the previewed lead back."""
    _answer_preview(name, lead_id, False)


def _check_pacing(mode: str | None, retry: str | None, amd_action: str | None = None,
                  amd_media: str | None = None) -> None:
    import re

    from ari_app.pacing_modes import MODES
    from dialguard.campaigns.retry import parse_rules

    if mode is not None and mode not in MODES:
        fail(f"--pacing/--mode {mode!r}: one of {', '.join(MODES)}")
    if amd_action is not None and amd_action not in ("hangup", "message"):
        fail(f"--amd-action {amd_action!r}: hangup or message")
    if amd_media is not None and (".." in amd_media
                                  or not re.fullmatch(r"(sound|recording):[A-Za-z0-9_./-]{1,200}", amd_media)):
        fail(f"--amd-media {amd_media!r}: an Asterisk media URI, sound:NAME or recording:NAME")
    try:
        parse_rules(retry)
    except ValueError as exc:
        fail(f"--retry: {exc}")


def _norm_retry(retry: str | None) -> str | None:
    from dialguard.campaigns.retry import format_rules, parse_rules
    return None if retry is None else format_rules(parse_rules(retry))


@camp.command("approve")
def approve(name: str, start: Optional[str] = typer.Option(None, "--start"),
            end: Optional[str] = typer.Option(None, "--end"),
            rules: Optional[str] = typer.Option(None, "--rules", help="the campaign's own packs, comma-separated")):
    """Approve a campaign (dialer record first, then the engine), optionally for a date
    range and with its own rule packs."""
    s, e_ = time_arg(start, "--start"), time_arg(end, "--end")
    if s and e_ and e_ <= s:
        fail("--end must be after --start")
    if rules:
        from dialguard.rules import Policy, RulesError
        try:
            Policy.load(rules)
        except RulesError as exc:
            fail(str(exc))
    direct("campaign approve")
    rec = _dialer_record(lambda st: st.set_approval(name, True, s, e_, rules))
    run(lambda e: e.set_campaign(name, True, s, e_, rules=rules))
    typer.echo(f"campaign {name} approved" + (f" from {s.isoformat()}" if s else "")
               + (f" until {e_.isoformat()}" if e_ else "")
               + ("" if rec else " (engine only: no dialer campaign of that name)"))


@camp.command("revoke")
def revoke(name: str, why: str = typer.Option("", "--why", help="kept in the audit")):
    """Withdraw approval: the engine denies at once; a running dialer campaign stops."""
    r = remote_write("/api/v1/campaigns/revoke", {"name": name, "why": why})
    if r is not None:  # as the token's user, through the console (compliance or above)
        typer.echo(f"campaign {name} not approved (as {r['by']})")
        return
    direct("campaign revoke")
    run(lambda e: e.set_campaign(name, False, why=why))
    _dialer_record(lambda st: st.set_approval(name, False))
    typer.echo(f"campaign {name} not approved")


def _set_state(name: str, state: str, verb: str):
    c = _store_run(lambda s: s.set_state(name, state))
    typer.echo(f"campaign {c.name} {verb}")


async def _policy_of(c):
    """The rules the campaign's calls are decided by (rules_choice.campaign_rules): its own
    packs (recorded with its approval in both stores), else the rules version in effect in
    Redis, else the node's DIALGUARD_RULES (also when Redis cannot be read: the rules files
    say the same in most sites). None when they cannot be loaded."""
    from redis.exceptions import RedisError

    from dialguard import redisconn
    from dialguard.decision.keys import Keys
    from dialguard.decision.rules_choice import campaign_rules
    from dialguard.rules import RulesError
    from dialguard.rules_store import RulesStore

    settings = Settings()
    try:
        if c.rules:  # its own packs decide: nothing in Redis can change that (nor wait 2 s for it)
            return campaign_rules(c.rules, None, settings.rules).policy
        try:
            r = redisconn.async_redis(settings, max_connections=2, timeout=2)
            try:
                store = RulesStore(r, Keys(settings.key_prefix, settings.hash_secret))
                return (await store.campaign_rules(c.name, settings.rules)).policy
            finally:
                await r.aclose()
        except (RedisError, OSError):
            return campaign_rules(None, None, settings.rules).policy
    except RulesError:
        return None


def message_refusal(c, policy) -> str | None:
    """Why a campaign may not start: a pack it runs under requires a lawful abandon
    message (naming the seller) and it has none of its own."""
    packs = policy.abandon_message_packs if policy is not None else []
    if c.abandon_media or not packs:
        return None
    return (f"campaign {c.name}: {', '.join(packs)} require(s) an abandon message naming the seller and a "
            "number to opt out (47 CFR 64.1200(a)(7)(i)(A); Ofcom: the company's name), and the default "
            "(all-circuits-busy-now) names no one: record one and set it with `dialguard campaign edit "
            f"{c.name} --abandon-message sound:/path/on/the/asterisk/host/without/extension`")


@camp.command("start")
def start_(name: str):
    """Start dialing an approved campaign (refused without an abandon message of its own
    when a pack it runs under requires a lawful one: us-tcpa, uk-ofcom)."""
    async def go(s):
        c = await s.campaign(name)
        if c is None:
            raise ValueError(f"campaign {name!r} does not exist")
        why = message_refusal(c, await _policy_of(c)) if c.approved else None  # unapproved: set_state says so
        if why:
            return why
        await s.set_state(name, "running")
        return None

    why = _store_run(go)
    if why:
        fail(why)
    typer.echo(f"campaign {name} running")


@camp.command("pause")
def pause_(name: str):
    """Stop placing new calls (calls in progress finish)."""
    _set_state(name, "paused", "paused")


@camp.command("stop")
def stop_(name: str):
    """Stop the campaign (start it again to resume)."""
    _set_state(name, "stopped", "stopped")


@camp.command("status")
def status(name: str, as_json: bool = typer.Option(False, "--json")):
    """State, settings, leads by state, today's answered/abandoned calls and abandon rate,
    what the abandoned calls' messages did (begun, later than 2 s, failed: docs/DIALER.md);
    every abandon limit (the packs' and the campaign's own) against its maximum, and
    what the dialer's pacing may do under them (open, progressive, stopped)."""
    from dialguard.campaigns.store import local_day

    async def go(s):
        c = await s.campaign(name)
        if c is None:
            raise ValueError(f"campaign {name!r} does not exist")
        from datetime import timezone

        from dialguard.campaigns.abandon import assess, campaign_limits
        settings = Settings()
        now = datetime.now(timezone.utc)
        today = local_day(now, settings.site_timezone)
        answered, abandoned = await s.abandon_stats(name, *today)
        messages = await s.abandon_messages(name, *today)
        policy = await _policy_of(c)  # as the dialer reads it: its own packs, else the version in effect
        limits = await campaign_limits(s, policy, c, now, settings.site_timezone)
        verdict = assess(limits)
        due = await s._one("select min(next_eligible_at) t from dialer_leads where campaign = %s"
                           " and state = 'pending' and parked is null", (name,))
        held = await s.open_holds(name)
        # leads whose next time is unknown (a calendar year not imported): each its own hold
        held += [{"reason": "calendar_unknown", "started_at": w["since"], "leads": w["leads"],
                  "detail": f"{w['detail']} (import it: dialguard calendar import)"}
                 for w in await s.calendar_waits(name)]
        return c, {"leads": await s.lead_counts(name), "next_due_at": due["t"].isoformat() if due["t"] else None,
                   "answered_today": answered, "abandoned_today": abandoned,
                   "abandon_messages_today": messages,
                   "abandon_pacing": verdict.state, "abandon_state": verdict.summary(),
                   "callable_at": verdict.callable_at.isoformat() if verdict.callable_at else None,
                   "abandon_limits": [x.describe() for x in limits],
                   "held_back": [f"{h['reason']} since {h['started_at'].isoformat()}: {h['detail']}"
                                 + (f" ({h['leads']} leads)" if h["leads"] else "") for h in held],
                   "message_required_by": (policy.abandon_message_packs if policy is not None and
                                           not c.abandon_media else [])}

    c, extra = _store_run(go)
    _show(c, extra, as_json)


@camp.command("list")
def list_(as_json: bool = typer.Option(False, "--json")):
    """Dialer campaigns: state, approval and pacing."""
    from dataclasses import asdict

    rows = []
    for c in _store_run(lambda s: s.campaigns()):
        d = asdict(c)
        for k in ("approved_start", "approved_end"):
            d[k] = d[k].isoformat() if d[k] else None
        rows.append(d)
    if as_json:
        print(json.dumps({"campaigns": rows}, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no dialer campaign (create one with `dialguard campaign create NAME`)")
    for d in rows:
        typer.echo(f"{d['name']}: {d['state']}, {'approved' if d['approved'] else 'not approved'}, "
                   f"{d['calls_per_second']} calls/s, at most {d['max_concurrent']} at once")


@camp.command("import")
def import_(name: str, path: Path = typer.Argument(..., help="CSV or XLSX with a number column"),
            rejects: Optional[Path] = typer.Option(None, "--rejects", help="CSV report of rejected rows"),
            as_json: bool = typer.Option(False, "--json")):
    """Import leads: numbers normalized to E.164, duplicates dropped, rejected rows reported."""
    from dialguard.campaigns.leads import LeadFileError, Reject, parse_leads, write_rejects

    try:
        parsed = parse_leads(path, Settings().default_region)
    except LeadFileError as exc:
        fail(str(exc))
    async def add(s):
        # due from the guard's clock: with a test clock (dev stack) that is the rules'
        # time, so leads imported here are due for a dialer on the same clock
        now = None
        settings = Settings()
        if settings.test_clock:
            from dialguard.engine import Engine
            e = await Engine.create(settings)
            try:
                now = await e.now()
            finally:
                await e.close()
        return await s.add_leads(name, parsed.leads, now=now)

    added, existing = _store_run(add)
    rej = parsed.rejects + [Reject(x.line, x.number, "already a lead of this campaign") for x in existing]
    rej.sort(key=lambda r: r.line)
    rejects = rejects or path.with_suffix(path.suffix + ".rejects.csv")
    if rej:
        write_rejects(rejects, rej)
    report = {"campaign": name, "rows": parsed.rows, "added": added,
              "duplicates": parsed.duplicates_in_file + len(existing),
              "rejected": len(rej), "rejects_file": str(rejects) if rej else None,
              "rejects": [{"line": r.line, "value": r.value, "why": r.why} for r in rej[:100]]}
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    typer.echo(f"{parsed.rows} rows: {added} leads added, {len(rej)} rejected"
               + (f" (see {rejects})" if rej else ""))
    for r in rej[:10]:
        typer.echo(f"  line {r.line}: {r.value!r}: {r.why}")


@camp.command("disposition")
def disposition(lead_id: int, result: str = typer.Argument(..., help="success | failed | follow-up"),
                at: Optional[str] = typer.Option(None, "--at", help="follow-up time, ISO 8601 with offset")):
    """An agent's disposition of a lead: done (success, failed) or called again at a time."""
    try:
        kind, when = parse_disposition(result + (f"@{at}" if at else ""))
    except ValueError as exc:
        fail(str(exc))
    row = _store_run(lambda s: s.set_disposition(lead_id, kind, when))
    if row is None:
        fail(f"lead {lead_id} does not exist")
    typer.echo(f"lead {lead_id}: {kind}" + (f", next call at {when.isoformat()}" if when else "")
               + (" (on a call now: applied when the call ends)" if row["state"] == "dialing"
                  else f" (state {row['state']})"))

dialer = typer.Typer(help="The ARI campaign dialer.", no_args_is_help=True)
app.add_typer(dialer, name="dialer")


@dialer.command("run")
def dialer_run(
    agents: str = typer.Option(os.environ.get("DIALGUARD_DIALER_AGENTS", ""), "--agents",
                               help="NAME=ENDPOINT,... e.g. a1=PJSIP/agent-phones/sip:a1@10.0.0.5"),
    campaign: Optional[list[str]] = typer.Option(None, "--campaign", help="only these (default: all running)"),
    trunk: str = typer.Option(os.environ.get("DIALGUARD_DIALER_TRUNK", "carrier"), "--trunk"),
    app_name: str = typer.Option(os.environ.get("DIALGUARD_DIALER_APP", "dialguard-dialer"), "--app"),
    bridge_timeout: float = typer.Option(1.7, "--bridge-timeout", help="seconds from answer to agent; "
                                         "then the abandon message, which must begin within 2 s of the answer"),
    agent_devices: Optional[str] = typer.Option(
        None, "--agent-devices", help="NAME=DEVICE,... whose Asterisk device state says an agent is busy "
                                      "(default: DIALGUARD_DIALER_AGENT_DEVICES)"),
    agent_lease: Optional[float] = typer.Option(
        None, "--agent-lease", help="seconds an agent lease lives without a heartbeat "
                                    "(default: DIALGUARD_DIALER_AGENT_LEASE_S, 15)"),
):
    """Run the dialer: ARI Stasis app, campaigns from PostgreSQL, decisions by the engine.
    ARI from DIALGUARD_ARI_URL / DIALGUARD_ARI_USER / DIALGUARD_ARI_PASSWORD."""
    from ari_app.main import config_from_env, parse_agents, run_dialer

    if agent_devices is not None:
        os.environ["DIALGUARD_DIALER_AGENT_DEVICES"] = agent_devices
    if agent_lease is not None:
        os.environ["DIALGUARD_DIALER_AGENT_LEASE_S"] = str(agent_lease)
    try:
        agent_map = parse_agents(agents)
        config_from_env(agent_map)  # every setting checked before anything starts
    except ValueError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_dialer(agent_map, campaigns=campaign or None, trunk=trunk, app=app_name,
                               bridge_timeout=bridge_timeout))
    except KeyboardInterrupt:
        pass


def _dialer_record(fn):
    """fn(store) when the dialer's tables exist; None otherwise (engine-only campaigns)."""
    return _store_run(fn, missing_ok=True)


def _show(c, extra: dict, as_json: bool) -> None:
    from dataclasses import asdict

    d = asdict(c)
    d.update(extra)
    for k in ("approved_start", "approved_end"):
        d[k] = d[k].isoformat() if d[k] else None
    if "answered_today" in extra:
        from ari_app.pacing import abandon_rate
        d["abandon_rate_pct"] = round(abandon_rate(extra["answered_today"], extra["abandoned_today"]), 2)
    if as_json:
        print(json.dumps(d, ensure_ascii=False))
    else:
        for k, v in d.items():
            typer.echo(f"{k}: {v}")
