"""Admin writes by an authenticated user (issue 15, point 3): one function per action.

The API (dialguard/web/admin_api.py), the console's forms and the CLI with
DIALGUARD_TOKEN (through that API) all come here: dialguard.authz first (the
least role of the action; a refusal says nothing about the input), then the
input (a bad number, an unknown caller ID, an unreadable time is an ActionError
with its HTTP status, and nothing is written), then the same store methods the
CLI calls in break-glass, with `authz.actor_of(identity)` as the audit's actor.

Actions and their least role (authz.ACTIONS): override_revoke (supervisor),
campaign_revoke (compliance), dnc_edit / dnc_remove (supervisor / compliance),
optout_record (supervisor: opt-out, complaint, consent), callerid_edit
(compliance), pause_region / resume_region (supervisor).
"""

from __future__ import annotations

from datetime import datetime

from dialguard import authz
from dialguard.users import Identity

MAX_WHY = 500
EVENT_KINDS = ("opt_out", "complaint", "consent", "consent_revoke")


class ActionError(ValueError):
    """An admin write refused; status: the HTTP answer (400 bad input, 403 role, 404 unknown, 503 store)."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def _require(ident: Identity | None, action: str) -> str:
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        raise ActionError(str(exc), 403) from None
    return authz.actor_of(ident)


def text_field(value, what: str, limit: int = MAX_WHY, required: bool = False,
               error: type[ValueError] = ActionError) -> str:
    """A free-text field of a request (a why, a note, a purpose): stripped, bounded;
    `error` is what the caller answers with (also dialguard/approvals.py)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise error(f"{what}: text expected")
    value = value.strip()
    if required and not value:
        raise error(f"{what}: required")
    if len(value) > limit:
        raise error(f"{what}: at most {limit} characters")
    return value


_text = text_field


def _name(value, what: str) -> str | None:
    v = _text(value, what, 100)
    return v or None


def _number(engine, value, what: str = "number") -> str:
    """The E.164 form of a number, or ActionError: never a write with a number that does not parse."""
    from dialguard.numbers import parse_number

    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"{what}: required")
    info = parse_number(value, engine.default_region)
    if not info.valid:
        raise ActionError(f"{what}: {info.problem}")
    return info.e164


def _time(value, what: str) -> datetime | None:
    from dialguard.timeutil import parse_time

    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ActionError(f"{what}: an ISO 8601 time with offset")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ActionError(f"{what}: {exc}") from None


def campaign_list(campaign: str | None) -> str:
    """The DNC list a campaign name (or none: the global list) names; `global` itself is refused, as
    `dialguard dnc add|remove|import --campaign global` refuse it (it would name a campaign's list in
    Redis and the global list at rest)."""
    from dialguard.dnc import GLOBAL_LIST

    if campaign == GLOBAL_LIST:
        raise ActionError(f"campaign: {GLOBAL_LIST!r} names the global list: leave campaign out for it")
    return campaign or GLOBAL_LIST


# -- overrides and campaigns ------------------------------------------------------------

async def override_revoke(engine, ident: Identity, number, why="") -> dict:
    """Withdraw a number's unused override grant (404 when it has none: nothing is written)."""
    actor = _require(ident, "override_revoke")  # the role first: a refusal says nothing of the input
    e164 = _number(engine, number)
    why = _text(why, "why")
    if await engine.override_get(e164) is None:
        raise ActionError("no unused override for this number", 404)
    await engine.override_revoke(e164, why=why, actor=actor)
    return {"done": "override_revoke", "by": actor}


async def campaign_revoke(engine, ident: Identity, name, why="", conn=None) -> dict:
    """Withdraw a campaign's approval: the guard denies its next call `campaign_not_approved`
    (the enforcement point first), then the dialer's record, if any, is stopped (as
    `dialguard campaign revoke`). 404 for a campaign the guard does not know."""
    actor = _require(ident, "campaign_revoke")  # the role first: a refusal says nothing of the input
    name = _text(name, "name", 100, required=True)
    why = _text(why, "why")
    if not await engine.redis.exists(engine.keys.campaign(name)):
        raise ActionError(f"no campaign {name!r} in the guard (never approved)", 404)
    await engine.set_campaign(name, False, why=why, actor=actor)
    dialer = False
    if conn is not None and (await (await conn.execute("select to_regclass('dialer_campaigns')")).fetchone())[0]:
        cur = await conn.execute(
            "update dialer_campaigns set approved = false, approved_start = null, approved_end = null, rules = null, "
            "state = case when state in ('running', 'paused') then 'stopped' else state end, updated_at = now() "
            "where name = %s", (name,))
        dialer = cur.rowcount > 0
    return {"done": "campaign_revoke", "campaign": name, "dialer_record": dialer, "by": actor}


# -- DNC ----------------------------------------------------------------------------------

async def _dnc_at_rest(engine, done_so_far: str):
    """The DNC list at rest, or a 503 that says what was done in Redis already (the request is safe to repeat)."""
    from dialguard.dnc import DncDb, DncDbUnavailable

    try:
        return await DncDb.open(engine.settings.pg_dsn)
    except DncDbUnavailable as exc:
        raise ActionError(f"{done_so_far}: {exc}; send the same request again once PostgreSQL is back", 503) from None


async def dnc_add(engine, ident: Identity, number, campaign=None, why="") -> dict:
    """List a number (supervisor): in Redis first (denied from the next decision), then at rest."""
    actor = _require(ident, "dnc_edit")  # the role first: a refusal says nothing of the input
    from dialguard.dnc import DncStore, list_name

    e164 = _number(engine, number)
    campaign = _name(campaign, "campaign")
    lst = campaign_list(campaign)
    why = _text(why, "why")
    changed = await engine.dnc_add(e164, campaign, actor=actor, why=why)
    tag = engine.keys.number_tag(e164)
    changed = (await DncStore(engine.redis, engine.keys).add(list_name(campaign), [tag]) > 0) or changed
    db = await _dnc_at_rest(engine, "listed in Redis (denied from the next decision) but not stored at rest")
    try:
        stored = await db.add(lst, tag, engine.sealer.seal_raw(e164), actor)
    finally:
        await db.close()
    return {"done": "dnc_add", "list": lst, "added": bool(changed), "stored": stored, "by": actor}


async def dnc_remove(engine, ident: Identity, number, campaign=None, why="") -> dict:
    """Take a number off a list (compliance): Redis first, then the list at rest."""
    actor = _require(ident, "dnc_remove")  # the role first: a refusal says nothing of the input
    e164 = _number(engine, number)
    campaign = _name(campaign, "campaign")
    lst = campaign_list(campaign)
    why = _text(why, "why")
    from dialguard.dnc import DncDbUnavailable

    changed = await engine.dnc_remove(e164, campaign, actor=actor, why=why)
    db = await _dnc_at_rest(engine, "off the Redis list but still stored at rest (a counters rebuild would list it "
                                    "again)")
    try:
        deleted = await db.remove(lst, engine.keys.number_tag(e164), engine.sealer)
    except DncDbUnavailable as exc:  # a block holds it and the data key cannot re-seal it
        raise ActionError(f"off the Redis list but still stored at rest: {exc}", 503) from None
    finally:
        await db.close()
    return {"done": "dnc_remove", "list": lst, "removed": bool(changed or deleted), "unstored": deleted, "by": actor}


# -- opt-out, complaint, consent ------------------------------------------------------------

async def number_event(engine, ident: Identity, kind, number=None, party=None, why="") -> dict:
    """Record an opt-out, a complaint or consent (or revoke consent) for a number, a party
    (SPEC §2 `party`: every number decided with that person) or both (supervisor)."""
    actor = _require(ident, "optout_record")  # the role first: a refusal says nothing of the input
    if kind not in EVENT_KINDS:
        raise ActionError(f"kind: one of {', '.join(EVENT_KINDS)}")
    e164 = _number(engine, number) if number not in (None, "") else None
    party = _text(party, "party", 200) or None
    if not e164 and not party:
        raise ActionError("give a number, a party, or both")
    why = _text(why, "why")
    if kind in ("opt_out", "complaint"):
        fn = engine.opt_out if kind == "opt_out" else engine.complaint
        changed = await fn(e164, party=party, actor=actor, why=why)
    else:
        fn = engine.consent if kind == "consent" else engine.consent_revoke
        kw = {"actor": actor, "why": why}
        if party:
            import inspect
            if "party" not in inspect.signature(fn).parameters:
                raise ActionError(f"{kind} of a party is not supported by this guard: give a number")
            kw["party"] = party  # consent of a person (the events store's party consent)
        changed = await fn(e164, **kw)
    return {"done": kind, "changed": bool(changed), "by": actor}


# -- caller IDs -----------------------------------------------------------------------------

async def _known_caller_id(engine, e164: str, campaign: str | None) -> bool:
    tag = engine.keys.cid_tag(e164)
    if campaign:
        return bool(await engine.redis.hexists(engine.keys.pool(campaign), tag))
    return bool(await engine.redis.sismember(engine.keys.approved_cids, tag))


async def callerid_add(engine, ident: Identity, number, pool=False, campaign=None, why="") -> dict:
    """Approve a caller ID, optionally in the global pool or a campaign's (compliance)."""
    actor = _require(ident, "callerid_edit")  # the role first: a refusal says nothing of the input
    e164 = _number(engine, number, "caller_id")
    campaign = _name(campaign, "campaign")
    if not isinstance(pool, bool):
        raise ActionError("pool: true or false")
    why = _text(why, "why")
    await engine.approve_caller_id(e164, pool=pool, campaign=campaign, why=why, actor=actor)
    return {"done": "callerid_add", "pool": bool(pool or campaign), "campaign": campaign, "by": actor}


async def callerid_remove(engine, ident: Identity, number, campaign=None, why="") -> dict:
    """Withdraw a caller ID (or take it out of one campaign's pool); 404 for one not approved there."""
    actor = _require(ident, "callerid_edit")  # the role first: a refusal says nothing of the input
    e164 = _number(engine, number, "caller_id")
    campaign = _name(campaign, "campaign")
    why = _text(why, "why")
    if not await _known_caller_id(engine, e164, campaign):
        raise ActionError("unknown caller ID: not approved" + (f" in campaign {campaign}'s pool" if campaign else ""),
                          404)
    await engine.remove_caller_id(e164, campaign, why=why, actor=actor)
    return {"done": "callerid_remove", "campaign": campaign, "by": actor}


async def callerid_cooldown(engine, ident: Identity, number, until, why="") -> dict:
    """Rest an approved caller ID until a time (the guard does not pick it, nor allow calls from it)."""
    actor = _require(ident, "callerid_edit")  # the role first: a refusal says nothing of the input
    e164 = _number(engine, number, "caller_id")
    t = _time(until, "until")
    if t is None:
        raise ActionError("until: required (an ISO 8601 time with offset)")
    why = _text(why, "why")
    if t <= await engine.now():
        raise ActionError("until: in the past")
    if not await _known_caller_id(engine, e164, None):
        raise ActionError("unknown caller ID: not approved", 404)
    await engine.cooldown_caller_id(e164, t, why=why, actor=actor)
    return {"done": "callerid_cooldown", "until": t.isoformat(), "by": actor}


# -- region kill switch (#19) -----------------------------------------------------------------

def _region(value) -> str:
    from dialguard.location import LocationError, parse_region

    try:
        code = parse_region(value if isinstance(value, str) else None)
    except LocationError as exc:
        raise ActionError(str(exc)) from None
    if code is None:
        raise ActionError("region: an ISO 3166-2 code (e.g. US-LA) or a country")
    return code


async def pause_region(engine, ident: Identity, region, start=None, until=None, why="") -> dict:
    """Calls into a jurisdiction denied `paused` from `start` (default now) until `until` (default no end)."""
    actor = _require(ident, "pause")  # the role first: a refusal says nothing of the input
    code = _region(region)
    t0, t1 = _time(start, "from"), _time(until, "until")
    why = _text(why, "why")
    try:
        await engine.pause_region(code, t0, t1, why=why, actor=actor)
    except ValueError as exc:  # the window ends before it starts
        raise ActionError(str(exc)) from None
    return {"done": "pause", "scope": "region", "name": code, "from": t0.isoformat() if t0 else None,
            "until": t1.isoformat() if t1 else None, "by": actor}


async def resume_region(engine, ident: Identity, region, why="") -> dict:
    actor = _require(ident, "resume")  # the role first: a refusal says nothing of the input
    code = _region(region)
    why = _text(why, "why")
    if not await engine.redis.hexists(engine.keys.pause_regions, code):
        raise ActionError(f"{code} is not paused", 404)
    await engine.resume_region(code, why=why, actor=actor)
    return {"done": "resume", "scope": "region", "name": code, "by": actor}
