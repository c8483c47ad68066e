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
from datetime import datetime, timedelta, timezone

from dialguard import authz
from dialguard.admin_actions import text_field
from dialguard.users import Identity

MAX_OVERRIDE_HOURS = 30 * 24  # a forgotten grant must not live for ever (as `override grant`)
MAX_WHY = 1000


class ApprovalError(ValueError):
    """A request that cannot be made or decided; status: the HTTP answer it maps to."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def _text(value, what: str, limit: int = MAX_WHY, required: bool = True) -> str:
    return text_field(value, what, limit, required, ApprovalError)


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
    if lifts is None:
        lifts = []
    if not isinstance(lifts, (list, tuple)) or not all(isinstance(r, str) for r in lifts):
        raise ApprovalError(f"lifts: a list of reason codes (text), from {', '.join(sorted(LIFTABLE))}")
    lifts = sorted(set(lifts))
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


def _campaign_packs(rules) -> str | None:
    """A campaign's own packs as a request may name them: shipped pack names only (rules.shipped_spec).
    Never a file path: the console and the API would read it on the server (and show its lines in the
    refusal), and a file can change after the approval, which would bypass the four eyes. A rules file is
    for `dialguard --break-glass campaign approve --rules FILE`, run on the guard host."""
    from dialguard.rules import Policy, RulesError, shipped_spec

    if not rules:
        return None
    try:
        spec = shipped_spec(rules)
        Policy.load(spec)  # refused now, not at approval
    except RulesError as exc:
        raise ApprovalError(f"rules: {exc}") from None
    return spec


async def request_campaign(conn, ident: Identity, name: str, why: str, *, purpose: str, scope: str,
                           caps: str, hours: str, start: str | None = None, end: str | None = None,
                           rules: str | None = None) -> int:
    """A pending campaign approval: purpose, scope, caps and hours in words (for the
    approver), dates and rule packs enforced by the guard once approved."""

    _forbidden(ident, "campaign_request")
    name = _text(name, "name", 100)
    subject = {"name": name, "purpose": _text(purpose, "purpose"), "scope": _text(scope, "scope"),
               "caps": _text(caps, "caps"), "hours": _text(hours, "hours"),
               "rules": _text(rules, "rules", 500, required=False) or None}
    s, e = _when(start, "start"), _when(end, "end")
    if s and e and e <= s:
        raise ApprovalError("end must be after start")
    subject["start"], subject["end"] = (s.isoformat() if s else None), (e.isoformat() if e else None)
    subject["rules"] = _campaign_packs(subject["rules"])
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


async def listing(conn, kind: str | None = None, pending_only: bool = False, limit: int = 50,
                  engine=None) -> list[dict]:
    """Requests, newest first (the sealed number stays sealed: callers mask or open it); with
    the engine, approvals applied in Redis whose commit failed are completed first (reconcile)."""
    if engine is not None:
        await reconcile(conn, engine)
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


async def _lock_pending(conn, rid, ident: Identity) -> dict:
    """The request, locked for this transaction, if `ident` may decide requests of its kind
    (403 before anything else is said about it) and it is still pending and not theirs."""
    cur = await conn.execute("select kind from approval_requests where id = %s",
                             (int(rid) if str(rid).isdigit() else -1,))
    kind = await cur.fetchone()
    if kind is None:
        raise ApprovalError(f"no request {rid}", 404)
    _forbidden(ident, "override_approve" if kind[0] == "override" else "campaign_approve")
    return await _pending_for_update(conn, rid, ident)


class _Applied(Exception):
    """The request's approval is in the store already (a commit that failed after it): roll forward."""


async def _set_dialer_approval(conn, s: dict) -> None:
    """The dialer's record too, if it has one (as campaigns.store.Store.set_approval): a draft
    becomes approved and may be started; it dials only within the dates."""
    if (await (await conn.execute("select to_regclass('dialer_campaigns')")).fetchone())[0]:
        await conn.execute(
            "update dialer_campaigns set approved = true, approved_start = %s, approved_end = %s, "
            "rules = %s, state = case when state = 'draft' then 'approved' else state end, "
            "updated_at = now() where name = %s",
            (_when(s.get("start"), "start"), _when(s.get("end"), "end"), s.get("rules"), s["name"]))


async def _mark_approved(conn, req: dict, m: dict) -> None:
    """The PostgreSQL side of an approval (m: what the store recorded), in the caller's transaction."""
    if req["kind"] == "campaign":
        await _set_dialer_approval(conn, req["subject"])
    await conn.execute("update approval_requests set status = 'approved', decided_user = %s, decided_by = %s, "
                       "decided_at = %s, decision_note = %s, result = %s where id = %s",
                       (m["user"], m["by"], datetime.fromisoformat(m["at"]), m["note"], json.dumps(m["result"]),
                        req["id"]))


async def approve(conn, engine, ident: Identity, rid, note: str = "") -> dict:
    """Approve a pending request as a different compliance user.

    Both stores end consistent whatever fails: in one PostgreSQL transaction the
    request is locked and marked approved, then the change is written to Redis in
    one MULTI together with a note keyed by the request id (keys.approvals), then
    the transaction commits and the note is dropped. Redis failing: nothing is
    written there, the transaction rolls back, the request stays pending. The
    commit failing after the Redis write: the note stays, and `reconcile` (on
    every listing, decision and at the console's start) completes the approval
    in PostgreSQL from it, never writing the grant a second time."""
    note = _text(note, "note", required=False)
    await reconcile(conn, engine)  # a previous approval whose commit failed is completed first
    try:
        async with conn.transaction():
            req = await _lock_pending(conn, rid, ident)
            if await engine.redis.hexists(engine.keys.approvals, str(req["id"])):
                raise _Applied()  # another approver's write, not yet confirmed here (rolled back, then below)
            s = req["subject"]
            approver = authz.actor_of(ident)
            now = await engine.now()
            if req["kind"] == "override":
                from dialguard.ids import new_id
                until = now + timedelta(hours=float(s["hours"]))
                result = {"grant": "ov-" + new_id(), "expires_at": until.isoformat()}
            else:
                start, end = _when(s.get("start"), "start"), _when(s.get("end"), "end")
                try:  # a request stored before packs were names only: never a file read here
                    _campaign_packs(s.get("rules"))
                except ApprovalError as exc:
                    raise ApprovalError(f"request {req['id']} cannot be approved: {exc}; reject it and "
                                        "request the campaign again with shipped packs") from None
                result = {"campaign": s["name"], "start": s.get("start"), "end": s.get("end")}
            at = datetime.now(timezone.utc)
            mark = {"user": ident.user, "by": approver, "at": at.isoformat(), "note": note, "result": result}
            await _mark_approved(conn, req, mark)  # PostgreSQL first: a refusal there writes nothing in Redis
            if req["kind"] == "override":
                await engine.override_grant(
                    engine.sealer.open(req["number_enc"]), why=req["why"], approver=approver,
                    requested_by=req["requested_by"], actor=approver, request_id=req["id"], expires=until,
                    campaign=s.get("campaign"), lifts=s.get("lifts") or None, now=now, gid=result["grant"],
                    approval=(str(req["id"]), json.dumps(mark)))
            else:
                await engine.set_campaign(s["name"], True, start, end, rules=s.get("rules"), why=req["why"],
                                          actor=approver, requested_by=req["requested_by"], request=req["id"],
                                          purpose=s["purpose"], scope=s["scope"], caps=s["caps"], hours=s["hours"],
                                          approval=(str(req["id"]), json.dumps(mark)))
            # the commit comes next: if it fails, the note in keys.approvals lets reconcile finish
    except _Applied:
        await reconcile(conn, engine)
        raise ApprovalError(f"request {rid} is already approved", 409) from None
    # committed: the note has done its job (left behind, the next reconcile drops it)
    try:
        await engine.redis.hdel(engine.keys.approvals, str(req["id"]))
    except Exception:  # noqa: BLE001 - harmless: reconcile drops notes of approved requests
        pass
    return {"id": req["id"], "kind": req["kind"], "status": "approved", "requested_by": req["requested_by"],
            "approved_by": approver, **result}


async def reconcile(conn, engine) -> int:
    """Bring PostgreSQL up to the approvals applied in Redis (keys.approvals): a request
    still pending there is marked approved as the note says (approver, time, note,
    result; the dialer's record of a campaign too); the note of a request approved in
    PostgreSQL is dropped. Returns how many requests were completed. Called on every
    listing and decision and when the console starts: the two stores converge."""
    import logging

    import psycopg

    log = logging.getLogger("dialguard.approvals")
    raw = await engine.redis.hgetall(engine.keys.approvals)
    done = 0
    for k, v in raw.items():
        rid = int(k)
        m = json.loads(v)
        try:
            async with conn.transaction():
                cur = await conn.execute(f"select {_COLS} from approval_requests where id = %s for update", (rid,))
                row = await cur.fetchone()
                status = _row(row)["status"] if row else None
                if status == "pending":
                    await _mark_approved(conn, _row(row), m)
                    status = "approved"
                    done += 1
        except psycopg.Error as exc:  # still failing: the note stays for the next try; the others go on
            log.error("approval of request %s is in Redis but could not be recorded in PostgreSQL yet: %s", rid, exc)
            continue
        if status in ("approved", None):
            await engine.redis.hdel(engine.keys.approvals, k)
            if done:
                log.warning("request %s: approval by %s completed in PostgreSQL from Redis", rid, m.get("by"))
        else:  # rejected in PostgreSQL yet applied in Redis: cannot happen under the row lock; say it loudly
            log.error("request %s is %s in PostgreSQL but was applied in Redis by %s: check it", rid, status,
                      m.get("by"))
    return done


async def reject(conn, ident: Identity, rid, note: str = "", engine=None) -> dict:
    """Reject a pending request (compliance, not the requester); nothing changes in the store.
    A request whose approval is already in the store (a failed commit) is approved, not rejected."""
    note = _text(note, "note", required=False)
    if engine is not None:
        await reconcile(conn, engine)
    async with conn.transaction():
        req = await _lock_pending(conn, rid, ident)
        if engine is not None and await engine.redis.hexists(engine.keys.approvals, str(req["id"])):
            raise ApprovalError(f"request {rid} was approved meanwhile (being recorded)", 409)
        await conn.execute("update approval_requests set status = 'rejected', decided_user = %s, decided_by = %s, "
                           "decided_at = now(), decision_note = %s where id = %s",
                           (ident.user, authz.actor_of(ident), note, req["id"]))
    return {"id": req["id"], "kind": req["kind"], "status": "rejected", "rejected_by": authz.actor_of(ident)}
