"""`dialguard report`: what the guard decided and what the calls became, per
campaign, agent, caller ID or reason, over a date range (from the audit tables).

Definitions (docs/AUDIT.md):
- attempts: decisions asked; allowed / denied; denied_<reason>: denials with that
  reason (a denial with two reasons counts under both);
- outcome: the first outcome reported for an allowed decision; answered: a person
  picked up (conversation, answered, abandoned); conversations; talk_s: seconds;
- answer_rate = answered / allowed calls with an outcome reported (%);
- abandon_rate = abandoned / answered (%), the live-answer base regulators use;
- amd: calls an answering machine picked up (outcome `amd`, the dialer's AMD):
  not in `answered` (no person), nor in the abandon rate's base;
- complaints, opt_outs: in the range, attributed to the last allowed call to the
  same number before them (its campaign, agent, caller ID); "(no call)" if none.

By campaign only (the dialer's tables, dialguard/campaigns/sql/210):
- held_back, held_<reason>: leads the dialer held back WITHOUT a decision (so not in
  `attempts`): a kill switch (`paused`: the leads due when it began), a region kill
  switch (`region_paused`: leads parked), a closed zone (`zone_closed`), an abandon
  limit crossed (`abandon_limit`: the leads due when it began), no lawful abandon
  message (`no_message`), a next time in a calendar year not imported yet
  (`calendar_unknown`, sql/260: one row per wait; a lead the decision denied for it
  also counts as a denied attempt); held_s: seconds the whole campaign was held in the range
  (kill switch, abandon limit, no message);
- abandon_limit, limit_rate, limit_state: the campaign's tightest pack abandon limit
  (e.g. "us-tcpa 3% over 30 days"), its rate over the pack's own period and base
  (live-answered calls) ending at the end of the range (or now), and `within` /
  `OVER` (dialguard/campaigns/abandon.py, as `campaign status` and /metrics);
- message_late, message_failed, message_unknown: abandoned calls answered in the range
  whose message began later than 2 s after the answer (47 CFR 64.1200(a)(7)(i)(A)),
  could not be played to a callee still on the line (dialguard/campaigns/sql/240), or
  has no record at all, by the dialer or the dialplan (sql/250: look into any).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from dialguard.decision.models import REASON_ORDER
from dialguard.numbers import mask_number  # noqa: F401  (the one masking, for reports and logs)

GROUPS = {"campaign": "campaign", "agent": "agent", "caller_id": "caller_id_hash", "region": "region", "reason": None}
ANSWERED = ("conversation", "answered", "abandoned")
NO_CALL = "(no call)"


@dataclass
class Report:
    by: str
    start: datetime
    end: datetime
    tz: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    totals: list | None = None

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def parse_bound(text: str, tz: str, end: bool = False) -> datetime:
    """A date (local midnight in tz; an end date is inclusive) or an ISO time with offset.
    Every bad input is a ValueError, also a bound outside years 1-9999 (in tz or in UTC)."""
    text = text.strip()
    try:
        try:
            d = date.fromisoformat(text)
        except ValueError:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.replace(tzinfo=ZoneInfo(tz))
            return t.astimezone(timezone.utc)
        if end:
            d = d + timedelta(days=1)
        return datetime.combine(d, time(0), ZoneInfo(tz)).astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (years 1 to 9999)") from None


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 1) if den else None


HOLD_REASONS = ("paused", "region_paused", "zone_closed", "abandon_limit", "no_message", "calendar_unknown")


def _dialer_tables(conn) -> bool:
    return conn.execute("select to_regclass('dialer_holds') is not null").fetchone()[0]


def _holds(conn, start: datetime, end: datetime) -> dict:
    """campaign -> {held_<reason>: leads, held_back: leads, held_s: seconds}, in [start, end)."""
    out: dict = {}
    for camp, reason, leads, secs in conn.execute("""
            select campaign, reason, sum(leads),
                   sum(greatest(0, extract(epoch from least(coalesce(ended_at, least(%(b)s, now())), %(b)s)
                                                  - greatest(started_at, %(a)s))))
                       filter (where lead_id is null)
            from dialer_holds where started_at < %(b)s and coalesce(ended_at, 'infinity') > %(a)s
            group by 1, 2""", {"a": start, "b": end}).fetchall():
        v = out.setdefault(camp, {"held_back": 0, "held_s": 0})
        v[f"held_{reason}"] = int(leads or 0)
        v["held_back"] += int(leads or 0)
        v["held_s"] += int(round(secs or 0))
    return out


def _messages(conn, start: datetime, end: datetime) -> dict:
    """campaign -> {message_late, message_failed, message_unknown}: its abandoned calls
    answered in [start, end) whose message began late, failed, or has no record
    (docs/DIALER.md, "The abandon message")."""
    from psycopg.rows import dict_row

    from dialguard.campaigns.store import ABANDON_MESSAGES_SQL, MESSAGE_WITHIN_MS

    cur = conn.cursor(row_factory=dict_row)
    return {r["campaign"]: {"message_late": int(r["late"]), "message_failed": int(r["failed"]),
                            "message_unknown": int(r["unknown"])}
            for r in cur.execute(ABANDON_MESSAGES_SQL, {"a": start, "b": end, "w": MESSAGE_WITHIN_MS,
                                                       "c": None}).fetchall()}


def _limits(conn, campaigns, end: datetime, policy_of) -> dict:
    """campaign -> (limit text, rate %, state) of its tightest pack abandon limit,
    measured over the pack's period ending at `end` (or now, if earlier)."""
    from dialguard.campaigns.abandon import Limit, assess
    from dialguard.campaigns.store import LIVE_ABANDON_SQL

    at = min(end, datetime.now(timezone.utc))
    out = {}
    for camp in campaigns:
        policy = policy_of(camp) if policy_of else None
        if policy is None or not policy.abandon_limits:
            continue
        limits = []
        for pack, rp in policy.abandon_limits:
            answered, abandoned = conn.execute(LIVE_ABANDON_SQL, {"c": camp, "a": at - rp.period, "b": at}).fetchone()
            limits.append(Limit(pack, rp.max_pct, rp.period, int(answered), int(abandoned)))
        t = assess(limits).tightest
        if t is not None:
            out[camp] = (f"{t.source} {t.max_pct:g}% {t.window}", round(t.rate_pct, 2),
                         "OVER" if t.crossed else "within")
    return out


def campaign_policies(conn, default_rules: str, in_effect=None):
    """policy_of(campaign) for build(): the rules of a dialer campaign (its own packs, else
    `in_effect`, the rules version published in Redis that its calls are decided by, else
    `default_rules`, the node's); None for a campaign the dialer does not run (its calls
    are not in dialer_calls, so no abandon rate is measured for it)."""
    from dialguard.decision.rules_choice import campaign_rules
    from dialguard.rules import Policy, RulesError

    own = {}
    if conn.execute("select to_regclass('dialer_campaigns') is not null").fetchone()[0]:
        own = dict(conn.execute("select name, rules from dialer_campaigns").fetchall())
    cache: dict = {}

    def load(spec: str) -> Policy:
        if spec not in cache:
            try:
                cache[spec] = Policy.load(spec)
            except RulesError as exc:
                cache[spec] = exc
        if isinstance(cache[spec], RulesError):
            raise cache[spec]
        return cache[spec]

    def of(campaign):
        if campaign not in own:
            return None
        try:
            return campaign_rules(own[campaign], in_effect, default_rules, load=load).policy
        except RulesError:
            return None
    return of


def build(conn: psycopg.Connection, by: str, start: datetime, end: datetime, tz: str,
          cid_label=None, policy_of=None) -> Report:
    """policy_of(campaign) -> Policy or None: the rules whose abandon limits the
    campaign rows are shown against (by campaign only)."""
    if by not in GROUPS:
        raise ValueError(f"--by is one of {', '.join(GROUPS)}")
    if by == "reason":
        return _by_reason(conn, start, end, tz)
    g = GROUPS[by]
    args = {"a": start, "b": end}
    main = conn.execute(f"""
        with d as (
            select decision_id, allowed, {g} as g from audit_decisions
            where decided_at >= %(a)s and decided_at < %(b)s and replay_of is null
        ), o as (
            select distinct on (o.decision_id) o.decision_id, o.result, o.talk_s
            from audit_outcomes o join d using (decision_id)
            order by o.decision_id, o.recorded_at, o.outcome_id
        )
        select d.g, count(*), count(*) filter (where d.allowed), count(*) filter (where not d.allowed),
               count(o.result) filter (where d.allowed),
               count(*) filter (where o.result in ('conversation', 'answered', 'abandoned')),
               count(*) filter (where o.result = 'conversation'),
               coalesce(sum(o.talk_s), 0),
               count(*) filter (where o.result = 'abandoned'),
               count(*) filter (where o.result = 'amd')
        from d left join o using (decision_id)
        group by d.g""", args).fetchall()
    denied = conn.execute(f"""
        select {g}, r, count(*) from audit_decisions, unnest(reasons) r
        where not allowed and decided_at >= %(a)s and decided_at < %(b)s and replay_of is null
        group by 1, 2""", args).fetchall()
    facts = conn.execute(f"""
        select ld.g, e.kind, count(*) from audit_events e
        left join lateral (
            select d.{g} as g from audit_decisions d
            where d.number_hash = e.number_hash and d.allowed and d.decided_at <= e.at
            order by d.decided_at desc limit 1
        ) ld on true
        where e.kind in ('complaint', 'opt_out') and e.at >= %(a)s and e.at < %(b)s
        group by 1, 2""", args).fetchall()

    reasons = sorted({r for _, r, _ in denied}, key=lambda r: REASON_ORDER.get(r, 99))
    cols = [by, "attempts", "allowed", "denied", *[f"denied_{r}" for r in reasons], "answered", "conversations",
            "talk_s", "answer_rate", "abandoned", "abandon_rate", "amd", "complaints", "opt_outs"]
    holds: dict = {}
    limits: dict = {}
    messages: dict = {}
    if by == "campaign" and _dialer_tables(conn):
        holds = _holds(conn, start, end)
        held = [r for r in HOLD_REASONS if any(f"held_{r}" in v for v in holds.values())]
        cols += ["held_back", *[f"held_{r}" for r in held], "held_s", "message_late", "message_failed",
                 "message_unknown"]
        messages = _messages(conn, start, end)
        names = {g for g, *_ in main} | set(holds)
        limits = _limits(conn, sorted(n for n in names if n), end, policy_of)
        if limits:
            cols += ["abandon_limit", "limit_rate", "limit_state"]
    per: dict = {}
    for grp, attempts, allowed, den, reported, answered, conv, talk, abandoned, amd in main:
        per[grp] = {"attempts": attempts, "allowed": allowed, "denied": den, "reported": reported,
                    "answered": answered, "conversations": conv, "talk_s": int(talk), "abandoned": abandoned,
                    "amd": amd}
    for grp, r, n in denied:
        per.setdefault(grp, {})[f"denied_{r}"] = n
    for grp, kind, n in facts:
        per.setdefault(grp if grp is not None else NO_CALL, {})["complaints" if kind == "complaint" else "opt_outs"] = n
    for grp, v in holds.items():
        per.setdefault(grp, {}).update(v)
    for grp, v in messages.items():
        per.setdefault(grp, {}).update(v)
    for grp, (text, rate, state) in limits.items():
        per.setdefault(grp, {}).update({"abandon_limit": text, "limit_rate": rate, "limit_state": state})

    def label(grp):
        if grp is None:
            return "(none)"
        if by == "caller_id" and cid_label and grp != NO_CALL:
            return cid_label(grp)
        return grp

    rows = []
    tot = {c: 0 for c in cols[1:]}
    tot["reported"] = 0
    for grp in sorted(per, key=lambda x: (x is None, x == NO_CALL, str(x))):
        v = per[grp]
        row = [label(grp)]
        for c in cols[1:]:
            if c == "answer_rate":
                row.append(_pct(v.get("answered", 0), v.get("reported", 0)))
            elif c == "abandon_rate":
                row.append(_pct(v.get("abandoned", 0), v.get("answered", 0)))
            elif c in ("abandon_limit", "limit_rate", "limit_state"):
                row.append(v.get(c))  # per campaign: no total
            else:
                row.append(v.get(c, 0))
                tot[c] += v.get(c, 0)
        tot["reported"] += v.get("reported", 0)
        rows.append(row)
    totals = ["total"] + [
        _pct(tot["answered"], tot["reported"]) if c == "answer_rate" else
        _pct(tot["abandoned"], tot["answered"]) if c == "abandon_rate" else
        None if c in ("abandon_limit", "limit_rate", "limit_state") else tot[c] for c in cols[1:]]
    return Report(by, start, end, tz, cols, rows, totals)


def _by_reason(conn, start, end, tz) -> Report:
    args = {"a": start, "b": end}
    total, denied = conn.execute(
        "select count(*), count(*) filter (where not allowed) from audit_decisions "
        "where decided_at >= %(a)s and decided_at < %(b)s and replay_of is null", args).fetchone()
    rows = conn.execute("""
        select r, count(*), count(distinct number_hash), count(distinct campaign)
        from audit_decisions, unnest(reasons) r
        where not allowed and decided_at >= %(a)s and decided_at < %(b)s and replay_of is null
        group by r""", args).fetchall()
    rows.sort(key=lambda r: REASON_ORDER.get(r[0], 99))
    cols = ["reason", "denials", "numbers", "campaigns", "share_of_attempts", "share_of_denials"]
    out = [[r, n, nums, camps, _pct(n, total), _pct(n, denied)] for r, n, nums, camps in rows]
    return Report("reason", start, end, tz, cols, out, ["total denied", denied, None, None, _pct(denied, total), None])


def _sealer():
    """The data key's Sealer, or None where the key is not configured (labels name hashes then)."""
    from dialguard.crypto import Sealer
    try:
        return Sealer()
    except ValueError:
        return None


def _opener(sealer, show):
    def open_or(token: str | None, fallback: str) -> str:
        if token and sealer:
            try:
                return show(sealer.open(token))
            except Exception:  # noqa: BLE001 - sealed with another key: name the hash instead
                pass
        return "#" + fallback[:12]
    return open_or


def number_labeler(show=None):
    """(number_hash, sealed number) -> show(the number), masked by default (+86138******01),
    when the data key opens it, else '#' and the hash prefix."""
    open_or = _opener(_sealer(), show or mask_number)
    return lambda h, enc: open_or(enc, h)


def caller_id_labeler(conn: psycopg.Connection, show=lambda n: n):
    """Caller-ID tag -> show(its number) when the data key opens it (caller IDs are the
    business's own numbers; the console masks them below supervisor), else '#' and the tag's prefix."""
    tokens = dict(conn.execute("select tag, number_enc from audit_caller_ids").fetchall())
    open_or = _opener(_sealer(), show)
    return lambda tag: open_or(tokens.get(tag), tag)


# -- renderers ----------------------------------------------------------------------------
def to_csv(rep: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rep.columns)
    for r in rep.rows:
        w.writerow(["" if v is None else v for v in r])
    if rep.totals:
        w.writerow(["" if v is None else v for v in rep.totals])
    return buf.getvalue()


def to_xlsx(rep: Report, path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = f"by {rep.by}"
    ws.append(rep.columns)
    for c in ws[1]:
        c.font = Font(bold=True)
    for r in rep.rows:
        ws.append(r)
    if rep.totals:
        ws.append(rep.totals)
        for c in ws[ws.max_row]:
            c.font = Font(bold=True)
    ws.freeze_panes = "B2"
    for i, col in enumerate(rep.columns, start=1):
        width = max([len(str(col))] + [len(str(r[i - 1])) for r in rep.rows if r[i - 1] is not None])
        ws.column_dimensions[get_column_letter(i)].width = min(max(width + 2, 8), 40)
    meta = wb.create_sheet("parameters")
    for k, v in (("grouped by", rep.by), ("from", rep.start.isoformat()), ("to (exclusive)", rep.end.isoformat()),
                 ("time zone", rep.tz), ("generated", datetime.now(timezone.utc).isoformat(timespec="seconds")),
                 ("definitions", "see docs/AUDIT.md, 'Reports'")):
        meta.append([k, v])
    wb.save(path)


SHORT = {"attempts": "attempts", "allowed": "allowed", "denied": "denied", "answered": "answered",
         "conversations": "conver-\nsations", "talk_s": "talk\n(s)", "answer_rate": "answer\nrate",
         "abandoned": "aban-\ndoned", "abandon_rate": "abandon\nrate", "complaints": "com-\nplaints",
         "opt_outs": "opt-\nouts", "held_back": "held\nback", "held_s": "held\n(s)",
         "abandon_limit": "pack abandon\nlimit", "limit_rate": "rate over\nits period", "limit_state": "limit"}


def to_rich(rep: Report):
    """A table for the terminal: the per-reason denial columns folded into one."""
    from rich.table import Table

    t = Table(title=f"dialguard report by {rep.by}: {rep.start:%Y-%m-%d %H:%M}Z – {rep.end:%Y-%m-%d %H:%M}Z "
                    f"(dates in {rep.tz})")
    reason_cols = [i for i, c in enumerate(rep.columns) if c.startswith("denied_")]
    held_cols = [i for i, c in enumerate(rep.columns) if c.startswith("held_") and c not in ("held_back", "held_s")]
    shown = [i for i in range(len(rep.columns)) if i not in reason_cols and i not in held_cols]
    fmt = lambda c, v: "—" if v is None else (f"{v}%" if c.endswith("_rate") or c.startswith("share") else str(v))  # noqa: E731
    for i in shown:
        c = rep.columns[i]
        t.add_column(SHORT.get(c, c.replace("_", " ")), justify="left" if i == 0 else "right",
                     no_wrap=(i == 0))
        if c == "denied" and reason_cols:
            t.add_column("denied by reason")
        if c == "held_back" and held_cols:
            t.add_column("held back by reason\n(no decision)")

    def cells(row, total=False):
        out = []
        for i in shown:
            out.append(fmt(rep.columns[i], row[i]))
            if rep.columns[i] == "denied" and reason_cols:
                out.append("\n".join(f"{rep.columns[j][7:]} {row[j]}" for j in reason_cols if row[j]))
            if rep.columns[i] == "held_back" and held_cols:
                out.append("\n".join(f"{rep.columns[j][5:]} {row[j]}" for j in held_cols if row[j]))
        return out

    for r in rep.rows:
        t.add_row(*cells(r))
    if rep.totals:
        t.add_section()
        t.add_row(*cells(rep.totals), style="bold")
    return t


# -- shadow rules: what a candidate rules version would have changed ----------------------
SHADOW_COLS = ["decided_at", "decision_id", "campaign", "agent", "number", "enforced", "enforced_reasons",
               "shadow", "shadow_reasons", "rules_version", "shadow_version"]


@dataclass
class ShadowReport:
    """Decisions evaluated under shadow rules (docs/AUDIT.md, "Shadow report"):
    per shadow version, how many and what would have changed; and every
    decision whose shadow verdict differs from the enforced one."""

    start: datetime
    end: datetime
    tz: str
    summary: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=lambda: list(SHADOW_COLS))
    rows: list[list] = field(default_factory=list)

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]



def build_shadow(conn: psycopg.Connection, start: datetime, end: datetime, tz: str,
                 number_label=None) -> ShadowReport:
    """number_label(number_hash, number_enc) -> text; default: the hash prefix."""
    args = {"a": start, "b": end}
    where = "decided_at >= %(a)s and decided_at < %(b)s and shadow_allowed is not null"
    summary = conn.execute(f"""
        select shadow_version, count(*),
               count(*) filter (where allowed = shadow_allowed),
               count(*) filter (where allowed and not shadow_allowed),
               count(*) filter (where not allowed and shadow_allowed),
               array_agg(distinct rules_seq) filter (where rules_seq is not null),
               min(decided_at), max(decided_at)
        from audit_decisions where {where}
        group by shadow_version order by shadow_version nulls first""", args).fetchall()
    by_reason = conn.execute(f"""
        select shadow_version, r, count(*) from audit_decisions, unnest(shadow_reasons) r
        where {where} and allowed and not shadow_allowed group by 1, 2""", args).fetchall()
    # reasons the enforced rules denied for, on the decisions the shadow would have allowed
    lifted = conn.execute(f"""
        select shadow_version, r, count(*) from audit_decisions, unnest(reasons) r
        where {where} and not allowed and shadow_allowed group by 1, 2""", args).fetchall()
    reasons: dict = {}
    for v, r, n in by_reason:
        reasons.setdefault(v, {})[r] = n
    unblocked: dict = {}
    for v, r, n in lifted:
        unblocked.setdefault(v, {})[r] = n
    order = lambda d: dict(sorted(d.items(), key=lambda kv: REASON_ORDER.get(kv[0], 99)))  # noqa: E731
    rep = ShadowReport(start, end, tz)
    for v, n, same, a2d, d2a, rvers, first, last in summary:
        rep.summary.append({
            "shadow_version": v, "evaluated": n, "same_verdict": same, "would_change": a2d + d2a,
            "allow_to_deny": a2d, "allow_to_deny_by_reason": order(reasons.get(v, {})),
            "deny_to_allow": d2a, "deny_to_allow_enforced_reasons": order(unblocked.get(v, {})),
            "rules_versions": sorted(rvers or []), "first": first, "last": last})
    label = number_label or (lambda h, _enc: "#" + h[:12])
    for row in conn.execute(f"""
            select decided_at, decision_id, campaign, agent, number_hash, number_enc, allowed, reasons,
                   shadow_allowed, shadow_reasons, rules_seq, shadow_version
            from audit_decisions where {where} and allowed <> shadow_allowed
            order by decided_at, decision_id""", args).fetchall():
        at, did, camp, agent, h, enc, allowed, rs, sa, srs, rv, sv = row
        rep.rows.append([at, did, camp, agent, label(h, enc), "allow" if allowed else "deny", ",".join(rs or []),
                         "allow" if sa else "deny", ",".join(srs or []), rv, sv])
    return rep


def _cell(v):
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return "" if v is None else v


def shadow_to_csv(rep: ShadowReport) -> str:
    """The differing decisions, one per line (the summary is in --json and the table)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rep.columns)
    for r in rep.rows:
        w.writerow([_cell(v) for v in r])
    return buf.getvalue()


def shadow_to_json(rep: ShadowReport) -> dict:
    return {"from": _cell(rep.start), "to": _cell(rep.end), "tz": rep.tz,
            "summary": [{k: _cell(v) if isinstance(v, datetime) else v for k, v in s.items()} for s in rep.summary],
            "decisions": [{k: _cell(v) if isinstance(v, datetime) else v for k, v in d.items()}
                          for d in rep.as_dicts()]}


def shadow_to_rich(rep: ShadowReport):
    from rich.console import Group
    from rich.table import Table

    head = Table(title=f"shadow rules: {rep.start:%Y-%m-%d %H:%M}Z – {rep.end:%Y-%m-%d %H:%M}Z (dates in {rep.tz})")
    for c in ("shadow version", "evaluated", "same", "allow→deny", "by shadow reason", "deny→allow",
              "enforced reasons lifted", "under active versions"):
        head.add_column(c, justify="left" if c in ("by shadow reason", "enforced reasons lifted") else "right")
    for s in rep.summary:
        head.add_row(str(s["shadow_version"]), str(s["evaluated"]), str(s["same_verdict"]), str(s["allow_to_deny"]),
                     "\n".join(f"{r} {n}" for r, n in s["allow_to_deny_by_reason"].items()),
                     str(s["deny_to_allow"]),
                     "\n".join(f"{r} {n}" for r, n in s["deny_to_allow_enforced_reasons"].items()),
                     ",".join(map(str, s["rules_versions"])) or "(config)")
    if not rep.summary:
        head.caption = "no decision was evaluated under shadow rules in this range"
    body = Table(title=f"{len(rep.rows)} decisions the shadow rules would have decided otherwise")
    for c in rep.columns:
        body.add_column(c.replace("_", " "))
    for r in rep.rows:
        body.add_row(*[str(_cell(v)) for v in r])
    return Group(head, body)
