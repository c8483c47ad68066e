"""Four eyes (issue 15, point 4): overrides and campaigns are requested by one
user and take effect only when a different user approves them.

- An override is requested by a supervisor (or above) for a number, with a
  reason, the reasons it may lift, an optional campaign and how long it holds
  once granted; a compliance user who is not the requester approves it, and
  only then is the grant written to the store (Engine.override_grant), with
  both identities in its audit record (requested_by, approver).
- A campaign is requested by a supervisor with its purpose, scope, caps,
  hours, dates and rule packs; a compliance user who is not the requester
  approves it (Engine.set_campaign). Until then the guard denies its calls
  `campaign_not_approved`, so the dialer places none.

Every function asks dialguard.authz first: the console, the API and the CLI
(through the API with a token) go through the same checks. Requests live in
PostgreSQL (sql/160_approval_requests.sql), which checks the four eyes again.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from dialguard import authz
from dialguard.users import Identity

MAX_OVERRIDE_HOURS = 30 * 24  # a forgotten grant must not live for ever (as `override grant`)
MAX_WHY = 1000


class ApprovalError(ValueError):
    """A request that cannot be made or decided; status: the HTTP answer it maps to."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def _text(value, what: str, limit: int = MAX_WHY, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApprovalError(f"{what}: text expected")
    value = value.strip()
    if required and not value:
        raise ApprovalError(f"{what}: required")
    if len(value) > limit:
        raise ApprovalError(f"{what}: at most {limit} characters")
    return value


def _forbidden(ident: Identity | None, action: str) -> None:
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        raise ApprovalError(str(exc), 403) from None


async def request_override(conn, engine, ident: Identity, number: str, why: str, *,
                           campaign: str | None = None, lifts: list[str] | None = None,
                           hours: float = 24) -> int:
    """A pending override request; nothing changes in the store until it is approved."""
    from dialguard.decision.models import LIFTABLE
    from dialguard.numbers import parse_number

    _forbidden(ident, "override_request")
    why = _text(why, "why")
    campaign = _text(campaign, "campaign", 100, required=False) or None
    lifts = sorted(set(lifts or ()))
    bad = [r for r in lifts if r not in LIFTABLE]
    if bad:
        raise ApprovalError(f"an override cannot lift {', '.join(bad)} (only {', '.join(sorted(LIFTABLE))}; "
                            "never dnc, opted_out, complained, invalid_number)")
    try:
        hours = float(hours)
    except (TypeError, ValueError):
        raise ApprovalError("hours: a number") from None
    if not 0 < hours <= MAX_OVERRIDE_HOURS:
        raise ApprovalError(f"hours: more than 0, at most {MAX_OVERRIDE_HOURS} (30 days)")
    info = parse_number(number if isinstance(number, str) else "", engine.default_region)
    if not info.valid:
        raise ApprovalError(f"number: {info.problem}")
    subject = {"campaign": campaign, "lifts": lifts, "hours": hours}
    cur = await conn.execute(
        "insert into approval_requests (kind, subject, number_hash, number_enc, why, requested_user, requested_by) "
        "values ('override', %s, %s, %s, %s, %s, %s) returning id",
        (json.dumps(subject), engine.keys.number_tag(info.e164), engine.sealer.seal(info.e164), why,
         ident.user, authz.actor_of(ident)))
    return (await cur.fetchone())[0]


def _when(value, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    from dialguard.timeutil import parse_time
    try:
        return parse_time(str(value))
    except ValueError as exc:
        raise ApprovalError(f"{what}: {exc}") from None


async def request_campaign(conn, ident: Identity, name: str, why: str, *, purpose: str, scope: str,
                           caps: str, hours: str, start: str | None = None, end: str | None = None,
                           rules: str | None = None) -> int:
    """A pending campaign approval: purpose, scope, caps and hours in words (for the
    approver), dates and rule packs enforced by the guard once approved."""
    from dialguard.rules import Policy, RulesError

    _forbidden(ident, "campaign_request")
    name = _text(name, "name", 100)
    subject = {"name": name, "purpose": _text(purpose, "purpose"), "scope": _text(scope, "scope"),
               "caps": _text(caps, "caps"), "hours": _text(hours, "hours"),
               "rules": _text(rules, "rules", 500, required=False) or None}
    s, e = _when(start, "start"), _when(end, "end")
    if s and e and e <= s:
        raise ApprovalError("end must be after start")
    subject["start"], subject["end"] = (s.isoformat() if s else None), (e.isoformat() if e else None)
    if subject["rules"]:
        try:
            Policy.load(subject["rules"])  # refused now, not at approval
        except RulesError as exc:
            raise ApprovalError(f"rules: {exc}") from None
    cur = await conn.execute(
        "insert into approval_requests (kind, subject, why, requested_user, requested_by) "
        "values ('campaign', %s, %s, %s, %s) returning id",
        (json.dumps(subject), _text(why, "why"), ident.user, authz.actor_of(ident)))
    return (await cur.fetchone())[0]


_COLS = ("id, kind, subject, number_hash, number_enc, why, requested_user, requested_by, requested_at, status, "
         "decided_user, decided_by, decided_at, decision_note, result")


def _row(r) -> dict:
    keys = [c.strip() for c in _COLS.split(",")]
    return dict(zip(keys, r))


async def listing(conn, kind: str | None = None, pending_only: bool = False, limit: int = 50) -> list[dict]:
    """Requests, newest first (the sealed number stays sealed: callers mask or open it)."""
    where, args = [], []
    if kind:
        where.append("kind = %s")
        args.append(kind)
    if pending_only:
        where.append("status = 'pending'")
    cur = await conn.execute(f"select {_COLS} from approval_requests "
                             f"{'where ' + ' and '.join(where) if where else ''} order by id desc limit %s",
                             (*args, limit))
    return [_row(r) for r in await cur.fetchall()]


async def _pending_for_update(conn, rid, ident: Identity) -> dict:
    try:
        rid = int(rid)
    except (TypeError, ValueError):
        raise ApprovalError("request id: a number") from None
    cur = await conn.execute(f"select {_COLS} from approval_requests where id = %s for update", (rid,))
    row = await cur.fetchone()
    if row is None:
        raise ApprovalError(f"no request {rid}", 404)
    req = _row(row)
    if req["status"] != "pending":
        raise ApprovalError(f"request {rid} is already {req['status']} (by {req['decided_by']})", 409)
    if req["requested_user"] == ident.user:
        raise ApprovalError(f"four eyes: {ident.user} requested {rid} and may not decide it; "
                            "another compliance user must", 403)
    return req


async def approve(conn, engine, ident: Identity, rid, note: str = "") -> dict:
    """Approve a pending request as a different compliance user: the change takes
    effect in the store, then the request is marked approved, in one PostgreSQL
    transaction (a store failure leaves the request pending)."""
    note = _text(note, "note", required=False)
    async with conn.transaction():
        cur = await conn.execute("select kind from approval_requests where id = %s",
                                 (int(rid) if str(rid).isdigit() else -1,))
        kind = await cur.fetchone()
        if kind is None:
            raise ApprovalError(f"no request {rid}", 404)
        _forbidden(ident, "override_approve" if kind[0] == "override" else "campaign_approve")
        req = await _pending_for_update(conn, rid, ident)
        s = req["subject"]
        approver = authz.actor_of(ident)
        if req["kind"] == "override":
            now = await engine.now()
            until = now + timedelta(hours=float(s["hours"]))
            gid = await engine.override_grant(engine.sealer.open(req["number_enc"]), why=req["why"],
                                              approver=approver, requested_by=req["requested_by"],
                                              actor=approver, request_id=req["id"], expires=until,
                                              campaign=s.get("campaign"), lifts=s.get("lifts") or None, now=now)
            result = {"grant": gid, "expires_at": until.isoformat()}
        else:
            start, end = _when(s.get("start"), "start"), _when(s.get("end"), "end")
            # the dialer's record too, if it has one (as campaigns.store.Store.set_approval):
            # a draft becomes approved and may be started; it dials only within the dates
            if (await (await conn.execute("select to_regclass('dialer_campaigns')")).fetchone())[0]:
                await conn.execute(
                    "update dialer_campaigns set approved = true, approved_start = %s, approved_end = %s, "
                    "rules = %s, state = case when state = 'draft' then 'approved' else state end, "
                    "updated_at = now() where name = %s", (start, end, s.get("rules"), s["name"]))
            await engine.set_campaign(s["name"], True, start, end, rules=s.get("rules"), why=req["why"],
                                      actor=approver, requested_by=req["requested_by"], request=req["id"],
                                      purpose=s["purpose"], scope=s["scope"], caps=s["caps"], hours=s["hours"])
            result = {"campaign": s["name"], "start": s.get("start"), "end": s.get("end")}
        await conn.execute("update approval_requests set status = 'approved', decided_user = %s, decided_by = %s, "
                           "decided_at = now(), decision_note = %s, result = %s where id = %s",
                           (ident.user, approver, note, json.dumps(result), req["id"]))
    return {"id": req["id"], "kind": req["kind"], "status": "approved", "requested_by": req["requested_by"],
            "approved_by": approver, **result}


async def reject(conn, ident: Identity, rid, note: str = "") -> dict:
    """Reject a pending request (compliance, not the requester); nothing changes in the store."""
    note = _text(note, "note", required=False)
    async with conn.transaction():
        cur = await conn.execute("select kind from approval_requests where id = %s",
                                 (int(rid) if str(rid).isdigit() else -1,))
        kind = await cur.fetchone()
        if kind is None:
            raise ApprovalError(f"no request {rid}", 404)
        _forbidden(ident, "override_approve" if kind[0] == "override" else "campaign_approve")
        req = await _pending_for_update(conn, rid, ident)
        await conn.execute("update approval_requests set status = 'rejected', decided_user = %s, decided_by = %s, "
                           "decided_at = now(), decision_note = %s where id = %s",
                           (ident.user, authz.actor_of(ident), note, req["id"]))
    return {"id": req["id"], "kind": req["kind"], "status": "rejected", "rejected_by": authz.actor_of(ident)}
