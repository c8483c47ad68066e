"""Audit commands: `db migrate|status`, `audit-ship`, `audit status|show|number|history`,
`report`, `counters rebuild`. Merged into the root by dialguard/cli/main.py.

Exit codes as the rest of the CLI: 0 ok, 1 not found, 2 bad input, 3 a service
is unreachable.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dialguard.cli.common import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, err, fail, out
from dialguard.config import Settings

app = typer.Typer()
db_app = typer.Typer(help="PostgreSQL schema: migrations, roles, grants.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: shipping backlog, decisions, numbers.", no_args_is_help=True)
counters_app = typer.Typer(help="Redis counters: rebuild them from the audit.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(counters_app, name="counters")


def _pg(dsn: str):
    import psycopg

    from dialguard.audit.db import connect, first_line, redact

    try:
        return connect(dsn)
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL unreachable at {redact(dsn)}: {first_line(exc)}", EXIT_UNAVAILABLE)


def _sealer():
    from dialguard.crypto import Sealer

    try:
        return Sealer()
    except ValueError as exc:
        fail(str(exc))


def _open(sealer, token: str | None) -> str:
    if not token:
        return "(none)"
    try:
        return sealer.open(token)
    except Exception:  # noqa: BLE001 - InvalidTag or a malformed token
        return "(cannot decrypt: wrong DIALGUARD_DATA_KEY?)"


def _iso(v) -> str | None:
    return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v


# -- db -----------------------------------------------------------------------------------
@db_app.command("migrate")
def db_migrate(
    directory: Optional[Path] = typer.Option(None, "--dir", help="Migrations folder (default: sql/)"),
    writer: list[str] = typer.Option([], "--writer", help="Login to make a member of dialguard_writer "
                                      "(default: the user of DIALGUARD_PG_DSN)"),
    reader: list[str] = typer.Option([], "--reader", help="Login to make a member of dialguard_reader"),
):
    """Apply pending migrations from sql/ (as dialguard_admin), refuse edited ones.

    Connects with DIALGUARD_PG_ADMIN_DSN (a superuser or CREATEROLE login) when
    set, else DIALGUARD_PG_DSN.
    """
    from dialguard.audit import migrate as m
    from dialguard.audit.db import admin_dsn, dsn_user, service_dsn, sql_dirs

    settings = Settings()
    dsn = admin_dsn(settings)
    with _pg(dsn) as conn:
        conn.autocommit = True
        me = conn.execute("select current_user").fetchone()[0]
        writers = list(writer)
        if not writers:
            svc = dsn_user(service_dsn(settings))
            if svc != me:
                writers = [svc]
        try:
            done = m.migrate(conn, directory or sql_dirs(), writers=writers, readers=reader,
                             say=lambda s: out.print(s, highlight=False))
        except m.MigrationError as exc:
            fail(str(exc))
        if not done:
            out.print("database is up to date")


@db_app.command("status")
def db_status(directory: Optional[Path] = typer.Option(None, "--dir"),
              as_json: bool = typer.Option(False, "--json")):
    """Applied, pending and changed migrations."""
    from dialguard.audit import migrate as m
    from dialguard.audit.db import admin_dsn, sql_dirs

    with _pg(admin_dsn()) as conn:
        conn.autocommit = True
        try:
            st = m.status(conn, directory or sql_dirs())
        except m.MigrationError as exc:
            fail(str(exc))
    if as_json:
        print(json.dumps({"applied": [{"version": a.version, "name": a.name, "applied_at": _iso(a.applied_at),
                                       "applied_by": a.applied_by} for a in st.applied],
                          "pending": [p.filename for p in st.pending], "problems": st.problems()}))
    else:
        for a in st.applied:
            out.print(f"applied  {a.version:03d}_{a.name}.sql  {a.applied_at:%Y-%m-%d %H:%M} by {a.applied_by}",
                      highlight=False)
        for p in st.pending:
            out.print(f"[yellow]pending[/]  {p.filename}", highlight=False)
        for msg in st.problems():
            err.print(f"[red]problem[/] {msg}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT if not st.ok else 0)


# -- audit-ship ----------------------------------------------------------------------------
@app.command("audit-ship")
def audit_ship(
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Entries per PostgreSQL transaction"),
    block_ms: int = typer.Option(1000, "--block-ms", min=1, help="How long one read waits for new entries"),
    claim_idle_ms: int = typer.Option(60000, "--claim-idle-ms", min=0,
                                      help="Claim entries another (dead) shipper left pending this long"),
    consumer: Optional[str] = typer.Option(None, "--consumer", help="Consumer name (default: DIALGUARD_NODE)"),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Key prefix (default: DIALGUARD_KEY_PREFIX)"),
    drain: bool = typer.Option(False, "--drain", help="Exit once the backlog is empty"),
    linger_ms: int = typer.Option(500, "--linger-ms", min=0,
                                  help="How long a short read waits for more entries (fewer transactions; "
                                       "at most a quarter of --claim-idle-ms)"),
):
    """Ship the audit stream from Redis to PostgreSQL (a service: `make up` starts it)."""
    from dialguard.audit.shipper import Shipper

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    sh = Shipper(Settings(), prefix=prefix, consumer=consumer, batch=batch, block_ms=block_ms,
                 claim_idle_ms=claim_idle_ms, linger_ms=linger_ms)
    signal.signal(signal.SIGTERM, sh.stop)
    signal.signal(signal.SIGINT, sh.stop)
    try:
        sh.run(drain=drain)
    finally:
        sh.close()


# -- audit ------------------------------------------------------------------------------------
@audit_app.command("status")
def audit_status(prefix: Optional[str] = typer.Option(None, "--prefix"),
                 as_json: bool = typer.Option(False, "--json")):
    """Backlog: audit records in Redis not yet in PostgreSQL, per shipper."""
    from redis.exceptions import RedisError

    from dialguard.audit.shipper import backlog_status

    settings = Settings()
    try:
        st = backlog_status(settings, prefix)
    except (RedisError, OSError) as exc:
        fail(f"Redis unreachable at {settings.redis_where()}: {exc}", EXIT_UNAVAILABLE)
    if as_json:
        print(json.dumps(st))
        return
    pct = 100 * st["backlog"] / st["ceiling"] if st["ceiling"] else 0
    out.print(f"backlog {st['backlog']} of {st['ceiling']} ({pct:.1f}% of the ceiling: beyond it decisions "
              f"are denied with guard_unavailable)", highlight=False)
    out.print(f"pending (read, not yet committed) {st['pending']}; oldest record "
              f"{st['oldest_age_s'] if st['oldest_age_s'] is not None else '-'} s old", highlight=False)
    for c in st["consumers"]:
        out.print(f"  shipper {c['name']}: {c['pending']} pending, idle {c['idle_ms'] / 1000:.1f} s",
                  highlight=False)
    if not st["consumers"]:
        out.print("  no shipper has read this stream yet (is `dialguard audit-ship` running?)")


@audit_app.command("show")
def audit_show(decision_id: str, as_json: bool = typer.Option(False, "--json")):
    """One decision with its outcomes; the number decrypted with DIALGUARD_DATA_KEY."""
    with _pg(Settings().pg_dsn) as conn:
        cur = conn.execute("select * from audit_decisions where decision_id = %s", (decision_id,))
        row = cur.fetchone()
        if row is None:
            fail(f"no decision {decision_id} in the audit (not shipped yet? see `dialguard audit status`)",
                  EXIT_NOT_FOUND)
        d = dict(zip([c.name for c in cur.description], row))
        cur = conn.execute("select outcome_id, result, talk_s, hangup_cause, subject, reported_at, node "
                           "from audit_outcomes where decision_id = %s order by recorded_at", (decision_id,))
        outcomes = [dict(zip([c.name for c in cur.description], r)) for r in cur.fetchall()]
    sealer = _sealer()
    d["number"] = _open(sealer, d.pop("number_enc"))
    from dialguard.audit.shipper import PLAIN_NUMBER

    if d.get("caller_id_requested") and not PLAIN_NUMBER.fullmatch(d["caller_id_requested"]):
        d["caller_id_requested"] = _open(sealer, d["caller_id_requested"])
    d.pop("request", None)
    if as_json:
        print(json.dumps({**{k: _iso(v) for k, v in d.items()},
                          "outcomes": [{k: _iso(v) for k, v in o.items()} for o in outcomes]}, default=str))
        return
    verdict = "[green]ALLOW[/]" if d["allowed"] else "[red]DENY[/]"
    out.print(f"{verdict} decision {d['decision_id']}", highlight=False)
    t = Table(show_header=False, box=None)
    for k in ("number", "number_hash", "decided_at", "recorded_at", "shipped_at", "reasons", "pre_reasons",
              "campaign", "agent", "subject", "call_id", "caller_id_requested", "caller_id_hash", "rules",
              "rules_version", "node", "latency_ms", "counters", "override_id"):
        v = d.get(k)
        t.add_row(k, ", ".join(v) if isinstance(v, list) else (str(_iso(v)) if v is not None else "-"))
    out.print(t)
    for o in outcomes:
        out.print(f"  outcome {o['result']} talk {o['talk_s']}s cause {o['hangup_cause']} at "
                  f"{_iso(o['reported_at'])}{' subject ' + o['subject'] if o['subject'] else ''}", highlight=False)


@audit_app.command("number")
def audit_number(number_hash: str, as_json: bool = typer.Option(False, "--json")):
    """The E.164 number behind a number hash (needs DIALGUARD_DATA_KEY)."""
    with _pg(Settings().pg_dsn) as conn:
        row = conn.execute(
            "select number_enc from audit_decisions where number_hash = %s and number_enc is not null "
            "union all select number_enc from audit_events where number_hash = %s and number_enc is not null "
            "limit 1", (number_hash, number_hash)).fetchone()
    if row is None:
        fail(f"no record with number hash {number_hash}", EXIT_NOT_FOUND)
    number = _open(_sealer(), row[0])
    print(json.dumps({"number_hash": number_hash, "number": number}) if as_json else number)


@audit_app.command("history")
def audit_history(number: str, limit: int = typer.Option(50, "--limit"),
                  as_json: bool = typer.Option(False, "--json")):
    """Why, when, by whom a number was called: its decisions, outcomes and events."""
    from dialguard.decision.keys import Keys
    from dialguard.numbers import parse_number

    settings = Settings()
    info = parse_number(number, settings.default_region)
    if not info.valid:
        fail(f"{number!r}: {info.problem}")
    h = Keys(settings.key_prefix, settings.hash_secret).number_tag(info.e164)
    with _pg(settings.pg_dsn) as conn:
        rows = conn.execute("""
            select * from (
              select d.decided_at as at, 'decision' as what, d.decision_id as id,
                     case when d.allowed then 'allow' else 'deny ' || array_to_string(d.reasons, ',') end as detail,
                     d.campaign, d.agent, d.rules
              from audit_decisions d where d.number_hash = %(h)s
              union all
              select o.reported_at, 'outcome', o.decision_id, o.result || ' ' || coalesce(o.talk_s, 0) || 's',
                     d.campaign, d.agent, null
              from audit_outcomes o join audit_decisions d using (decision_id) where d.number_hash = %(h)s
              union all
              select e.at, 'event', e.event_id, e.kind, e.campaign, null, null
              from audit_events e where e.number_hash = %(h)s
            ) x order by at desc limit %(n)s""", {"h": h, "n": limit}).fetchall()
    if as_json:
        for r in rows:
            print(json.dumps(dict(zip(("at", "what", "id", "detail", "campaign", "agent", "rules"),
                                      [_iso(v) for v in r]))))
        return
    t = Table("at (UTC)", "what", "id", "detail", "campaign", "agent", "rules",
              title=f"{info.e164} (hash {h}): latest {limit}")
    for r in rows:
        t.add_row(*[(_iso(v) if isinstance(v, datetime) else (v or "")) for v in r])
    out.print(t)


# -- report ---------------------------------------------------------------------------------------
def _rules_in_effect(settings):
    """The rules version published in Redis (`dialguard rules apply`, the console) that the
    campaigns without packs of their own are decided by; None if none is, or Redis cannot
    be read (then DIALGUARD_RULES, the node's, as before: said on stderr)."""
    import asyncio

    async def current():
        from dialguard import redisconn
        from dialguard.decision.keys import Keys
        from dialguard.rules_store import RulesStore

        r = redisconn.async_redis(settings, max_connections=2, timeout=2)
        try:
            return await RulesStore(r, Keys(settings.key_prefix, settings.hash_secret)).current()
        finally:
            await r.aclose()

    try:
        version = asyncio.run(current())
    except Exception as exc:  # noqa: BLE001 - the report reads PostgreSQL; Redis only for this
        typer.echo(f"rules version in effect not read ({type(exc).__name__}): abandon limits by DIALGUARD_RULES",
                   err=True)
        return None
    return version.policy() if version else None


@app.command("report")
def report(
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, local) or ISO time"),
    end: Optional[str] = typer.Option(None, "--to", help="Last day, inclusive (default: today)"),
    by: str = typer.Option("campaign", "--by",
                           help="campaign, agent, caller_id, region (where the callee lives, as requested) or reason"),
    tz: Optional[str] = typer.Option(None, "--tz", help="Time zone of the dates (default: DIALGUARD_SITE_TZ)"),
    csv_out: Optional[str] = typer.Option(None, "--csv", help="Write CSV to this file ('-': stdout)"),
    xlsx_out: Optional[Path] = typer.Option(None, "--xlsx", help="Write an Excel workbook"),
    pdf_out: Optional[Path] = typer.Option(None, "--pdf", help="Write a PDF (landscape A4, as the console's)"),
    shadow: bool = typer.Option(False, "--shadow", help="Decisions the shadow rules would have decided "
                                "otherwise, with a summary per shadow version (--by does not apply)"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
):
    """Attempts, allowed, denied by reason, answers, talk time, answer, abandon rates, complaints.

    Per campaign, agent, caller ID or reason, over a date range (definitions: docs/AUDIT.md).
    With --shadow: what the shadow rules would have changed.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from dialguard.audit import report as rp

    settings = Settings()
    tz = tz or settings.site_timezone
    try:
        ZoneInfo(tz)
        a = rp.parse_bound(start, tz)
        b = rp.parse_bound(end or datetime.now(ZoneInfo(tz)).date().isoformat(), tz, end=True)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        fail(f"dates: {exc}")
    if b <= a:
        fail("--to is before --from")
    if as_json and csv_out == "-":
        fail("--json and --csv - both write to stdout: pick one")
    if shadow:
        if xlsx_out or pdf_out:
            fail("--xlsx and --pdf are not available with --shadow (use --csv or --json)")
        with _pg(settings.pg_dsn) as conn:
            srep = rp.build_shadow(conn, a, b, tz, number_label=rp.number_labeler())
        if as_json:
            print(json.dumps(rp.shadow_to_json(srep), default=str))
        elif csv_out:
            _write_csv(rp.shadow_to_csv(srep), csv_out)
        else:
            console = out if out.is_terminal else Console(width=200)
            console.print(rp.shadow_to_rich(srep))
        return
    if by not in rp.GROUPS:
        fail(f"--by is one of {', '.join(rp.GROUPS)}")
    in_effect = _rules_in_effect(settings) if by == "campaign" else None
    with _pg(settings.pg_dsn) as conn:
        label = rp.caller_id_labeler(conn) if by == "caller_id" else None
        rep = rp.build(conn, by, a, b, tz, cid_label=label,
                       policy_of=rp.campaign_policies(conn, settings.rules, in_effect) if by == "campaign" else None)
    if as_json:
        print(json.dumps({"by": by, "from": _iso(a), "to": _iso(b), "tz": tz, "columns": rep.columns,
                          "rows": rep.as_dicts(),
                          "totals": dict(zip(rep.columns, rep.totals)) if rep.totals else None}, default=str))
    if csv_out:
        _write_csv(rp.to_csv(rep), csv_out)
    if xlsx_out:
        rp.to_xlsx(rep, xlsx_out)
        err.print(f"wrote {xlsx_out}", highlight=False)
    if pdf_out:
        from dialguard.audit.report_pdf import FontMissing, to_pdf

        meta = [f"{_iso(a)} to {_iso(b)} (end excluded; dates in {tz}); definitions: docs/AUDIT.md, 'Reports'",
                f"generated {_iso(datetime.now(timezone.utc))}"]
        try:
            pdf_out.write_bytes(to_pdf(rep, f"dialguard report by {by}", lambda c: c.replace("_", " "), meta))
        except FontMissing as exc:
            fail(str(exc))
        err.print(f"wrote {pdf_out}", highlight=False)
    if not csv_out and not xlsx_out and not pdf_out and not as_json:
        # a report is wide: when piped (no terminal to fit), do not squeeze it to 80 columns
        console = out if out.is_terminal else Console(width=200)
        console.print(rp.to_rich(rep))


def _write_csv(text: str, dest: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text, encoding="utf-8")
        err.print(f"wrote {dest}", highlight=False)


# -- counters rebuild ------------------------------------------------------------------------------------
@counters_app.command("rebuild")
def counters_rebuild(
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Key prefix (default: DIALGUARD_KEY_PREFIX)"),
    at: Optional[str] = typer.Option(None, "--at", help="Rules clock, ISO time (default: the guard's clock)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute, print, write nothing"),
    force: bool = typer.Option(False, "--force", help="Even if the audit stream still has unshipped records"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Restore the Redis counters from the audit after Redis lost its data.

    Pause calling first (`dialguard pause`) and let `dialguard audit-ship` drain:
    decisions taken during the rebuild are not in it.
    """
    from dialguard import redisconn
    from redis.exceptions import RedisError

    from dialguard.audit.db import require_schema, SchemaMissing
    from dialguard.audit.rebuild import RebuildError, rebuild
    from dialguard.timeutil import parse_time

    settings = Settings()
    now = None
    if at:
        try:
            now = parse_time(at)
        except ValueError as exc:
            fail(f"--at: {exc}")
    r = redisconn.sync_redis(settings, decode_responses=True, socket_timeout=30)
    try:
        if now is None and settings.test_clock:
            from dialguard.decision.keys import Keys
            from dialguard.timeutil import from_ms

            v = r.get(Keys(prefix or settings.key_prefix, settings.hash_secret).clock)
            now = from_ms(float(v)) if v else None
        with _pg(settings.pg_dsn) as conn:
            try:
                require_schema(conn)
            except SchemaMissing as exc:
                fail(str(exc), EXIT_UNAVAILABLE)
            summary = rebuild(conn, r, settings, prefix=prefix, now=now, dry_run=dry_run, force=force)
    except RebuildError as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(f"Redis unreachable at {settings.redis_where()}: {exc}", EXIT_UNAVAILABLE)
    finally:
        r.close()
    res = {"dry_run": dry_run, "decisions": summary.decisions, "outcomes": summary.outcomes,
           "events": summary.events, "keys": dict(summary.keys), "members": summary.members,
           "expired_keys_skipped": summary.expired_keys, "ended_leases_dropped": summary.dropped_leases,
           "lapsed_penalties_dropped": summary.dropped_penalties,
           "unknown_rules": dict(summary.unknown_rules), "changed_rules": dict(summary.changed_rules)}
    if as_json:
        print(json.dumps(res))
        return
    out.print(f"{'would rebuild' if dry_run else 'rebuilt'} from {summary.decisions} allowed decisions, "
              f"{summary.outcomes} outcomes, {summary.events} events:", highlight=False)
    for k, n in sorted(summary.keys.items()):
        out.print(f"  {k}: {n}", highlight=False)
    out.print(f"  ({summary.members} members; {summary.expired_keys} keys already expired, "
              f"{summary.dropped_leases} ended leases, {summary.dropped_penalties} lapsed caller-ID penalties "
              "not recreated)", highlight=False)
    for k, n in summary.unknown_rules.items():
        err.print(f"[yellow]warning[/] rules {k} unusable now: {n} decisions replayed with the default rules",
                  highlight=False)
    for k, n in summary.changed_rules.items():
        err.print(f"[yellow]warning[/] rules changed since {n} decisions ({k}): keys follow today's packs",
                  highlight=False)
