"""Campaigns, leads and dialer calls in PostgreSQL (dialguard/campaigns/sql/050_dialer_campaigns.sql).

The dialer is the only writer of calls; every state change is one short
transaction, so a dialer restarted at any point resumes from what is here.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dialguard import pg_cancel
from dialguard.campaigns.leads import Lead
from dialguard.timeutil import UTC

# Campaigns with calls not ended, outcomes not reported or leads left dialing (indexes
# dialer_calls_live, dialer_calls_unreported).
WITH_WORK_SQL = ("select campaign from dialer_calls where state <> 'ended' or not outcome_reported"
                 " union select campaign from dialer_leads where state = 'dialing'")
# 47 CFR 64.1200(a)(7)(i)(A): an abandoned call's message begins within 2 s of the greeting
MESSAGE_WITHIN_MS = 2000
# What abandoned calls answered in [a, b) did with their message (sql/240), by campaign:
# one definition for `campaign status` and `dialguard report`.
ABANDON_MESSAGES_SQL = (
    "select campaign, count(*) abandoned,"
    " count(*) filter (where message_state in ('started', 'played', 'cut')) begun,"
    " count(*) filter (where message_delay_ms > %(w)s) late,"
    " count(*) filter (where message_state = 'failed') failed,"
    " count(*) filter (where message_state = 'none') callee_gone,"
    " count(*) filter (where message_by_dialplan) by_dialplan,"
    " count(*) filter (where message_state is null and not message_by_dialplan) unknown"
    " from dialer_calls where result = 'abandoned' and answered_at >= %(a)s and answered_at < %(b)s"
    " and (%(c)s::text is null or campaign = %(c)s) group by campaign")
# A pack's base: calls answered by a live person (machines and voicemail out), by answer
# time. One query for the dialer, `campaign status` and `dialguard report`.
LIVE_ABANDON_SQL = (
    "select count(*) filter (where result is null or result not in ('amd', 'voicemail')) answered,"
    "       count(*) filter (where result = 'abandoned') abandoned"
    " from dialer_calls where campaign = %(c)s and answered_at >= %(a)s and answered_at < %(b)s")

# A column that each migration since 050 added and this code writes, by file: a database
# without one is refused at the dialer's start (check_schema), not at the first call's end.
OLDER = "the dialer tables are older than this code"
SCHEMA_MARKS = (
    ("dialer_calls", "hangup_deadline", "060_dialer_deadlines.sql", OLDER),
    ("dialer_leads", "number_enc", "090_dialer_leads_sealed.sql",
     "the dialer's leads still hold plaintext numbers (the migration seals them)"),
    ("dialer_campaigns", "pacing_mode", "130_dialer_pacing.sql", OLDER),
    ("dialer_campaigns", "amd_action", "131_dialer_amd.sql", OLDER),
    ("dialer_calls", "message_state", "240_dialer_call_message.sql", OLDER),
    ("dialer_calls", "message_by_dialplan", "250_dialer_call_message_by_dialplan.sql", OLDER),
)

STATES = ("draft", "approved", "running", "paused", "stopped")
# Outcomes after which a lead is not called again by this campaign.
FINAL_RESULTS = {"conversation"}


class SchemaMissing(RuntimeError):
    pass


class CampaignError(ValueError):
    pass


@dataclass
class Campaign:
    name: str
    state: str
    approved: bool
    approved_start: datetime | None
    approved_end: datetime | None
    rules: str | None
    max_concurrent: int
    calls_per_second: float
    dial_ratio: float
    abandon_limit_pct: float
    max_attempts: int
    retry_after_s: int
    ring_timeout_s: int
    optout_key: str
    dialer: str | None = None  # the dialer (Stasis app) it is assigned to; None: any
    abandon_media: str | None = None  # its abandon message (Asterisk media URI); None: the dialer's default
    pacing_mode: str = "progressive"  # ari_app/pacing_modes.py (dialguard/campaigns/sql/130)
    wrap_up_s: int = 0  # an agent's wrap-up after each call of this campaign
    retry_rules: str = ""  # per outcome delay and maximum (dialguard/campaigns/retry.py)
    amd: bool = False  # answering-machine detection before bridging (dialguard/campaigns/sql/131)
    amd_action: str = "hangup"  # a machine: hangup, or message (amd_media) then hangup
    amd_media: str | None = None


    @classmethod
    def from_row(cls, r: dict) -> "Campaign":
        return cls(**{k: r[k] for k in cls.__dataclass_fields__ if k in r})

    def served_by(self, dialer: str, only: list[str] | None) -> bool:
        """Whether the dialer named `dialer` (running `only` these campaigns, or all) may run it."""
        if self.dialer is not None and self.dialer != dialer:
            return False
        return only is None or self.name in only

    def may_dial(self, now: datetime) -> bool:
        if not (self.approved and self.state == "running"):
            return False
        if self.approved_start and now < self.approved_start:
            return False
        return not (self.approved_end and now >= self.approved_end)


TUNABLE = ("max_concurrent", "calls_per_second", "dial_ratio", "abandon_limit_pct", "max_attempts",
           "retry_after_s", "ring_timeout_s", "optout_key", "dialer", "abandon_media", "pacing_mode", "wrap_up_s",
           "retry_rules", "amd", "amd_action", "amd_media")
AGENT_STATES = ("logged_out", "ready", "break")  # the CLI's word; on_call / wrap_up are derived
# Preview mode: a lead held for an agent is due at HELD (never); one it accepted at
# ACCEPTED (due at once whatever the clock, test clocks included). Not PostgreSQL's
# infinity: drivers cannot load it.
HELD = datetime(9999, 1, 1, tzinfo=UTC)
ACCEPTED = datetime(2000, 1, 1, tzinfo=UTC)


MEDIA_RE = re.compile(r"^sound:[A-Za-z0-9_./-]{1,200}$")


def check_media(media: str) -> str:
    """An abandon message as Asterisk plays it: `sound:NAME` (a prompt of its sounds
    folder) or `sound:/absolute/path/without/extension` (a file on the Asterisk host).
    Letters, digits and _ . / - only: the name goes into the dialplan's Playback()."""
    if not MEDIA_RE.match(media) or ".." in media:
        raise CampaignError(f"abandon message {media!r}: expected sound:NAME or sound:/path/without/extension "
                            "(letters, digits, _ . / - only)")
    return media


def lead_number_hash(secret: bytes, e164: str) -> str:
    """A lead's number_hash: the audit's and the Redis keys' (Keys.number_tag)."""
    from dialguard.decision.keys import Keys

    return Keys("", secret).number_tag(e164)


class Store:
    """Leads keep no plaintext number (dialguard/campaigns/sql/090): number_hash dedups, number_enc
    is sealed; every row read back carries `number` opened again for the dialer."""

    def __init__(self, pool: AsyncConnectionPool, secret: bytes | None = None, sealer=None):
        from dialguard.config import Settings
        from dialguard.crypto import Sealer

        self.pool = pool
        self.secret = secret if secret is not None else Settings().hash_secret
        self.sealer = sealer if sealer is not None else Sealer()
        lead_number_hash(self.secret, "")  # no hash secret: refuse now, not at the first import

    @classmethod
    async def open(cls, dsn: str, max_size: int = 8, probe: bool = False) -> "Store":
        """probe (one-shot commands): one direct connection first, so that a server that
        refuses or is absent fails at once with the driver's reason, where the pool would
        retry for its 10 s (a long-running dialer wants those retries)."""
        pg_cancel.install()  # its waits keep a cancel (Python 3.11)
        if probe:
            import psycopg

            from dialguard.audit.db import CONNECT_TIMEOUT

            conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
            await conn.close()
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=max_size, open=False,
                                   # no server-side prepared statements: a `select *` prepared before
                                   # a migration adds a column fails ("cached plan must not change
                                   # result type") on every call until the process restarts
                                   kwargs={"autocommit": True, "row_factory": dict_row,
                                           "prepare_threshold": None})
        await pool.open(wait=True, timeout=10)
        try:
            store = cls(pool)
            await store.check_schema()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def check_schema(self) -> None:
        async with self.pool.connection() as c:
            r = await (await c.execute(
                "select to_regclass('dialer_calls') as t, " + ", ".join(
                    f"exists (select 1 from information_schema.columns where table_name = '{table}'"
                    f" and column_name = '{column}') as {column}" for table, column, *_ in SCHEMA_MARKS))).fetchone()
        if r["t"] is None:
            raise SchemaMissing("the dialer tables are missing: run `dialguard db migrate` "
                                "(dialguard/campaigns/sql/050_dialer_campaigns.sql)")
        for _, column, file, why in SCHEMA_MARKS:
            if not r[column]:
                raise SchemaMissing(f"{why}: run `dialguard db migrate` (dialguard/campaigns/sql/{file})")
        async with self.pool.connection() as c:
            # 260 adds a hold reason, not a column: the CHECK constraint says whether it ran
            h = await (await c.execute(
                "select pg_get_constraintdef(oid) d from pg_constraint where conname = 'dialer_holds_reason_check'"
                " and conrelid = to_regclass('dialer_holds')")).fetchone()
        if h is None or "calendar_unknown" not in h["d"]:
            raise SchemaMissing("the dialer cannot record leads held for a calendar year not imported: run "
                                "`dialguard db migrate` (dialguard/campaigns/sql/260_dialer_holds_calendar_unknown.sql)")

    def _opened(self, row: dict | None) -> dict | None:
        if row is not None:
            if row.get("number_enc"):
                row["number"] = self.sealer.open(row["number_enc"])
            if row.get("party_enc"):  # sealed like the number (dialguard/campaigns/sql/181)
                row["party"] = self.sealer.open(row["party_enc"])
            if "caller_id_enc" in row:
                enc = row["caller_id_enc"]
                row["caller_id"] = self.sealer.open(enc) if enc else None
        return row

    def _sealed(self, fields: dict) -> dict:
        """A call's caller ID goes to caller_id_enc, sealed (dialguard/campaigns/sql/090)."""
        if "caller_id" in fields:
            cid = fields.pop("caller_id")
            fields["caller_id_enc"] = self.sealer.seal(cid) if cid else None
        return fields

    async def _one(self, sql: str, args: Any = ()) -> dict | None:
        async with self.pool.connection() as c:
            return self._opened(await (await c.execute(sql, args)).fetchone())

    async def _all(self, sql: str, args: Any = ()) -> list[dict]:
        async with self.pool.connection() as c:
            return [self._opened(r) for r in await (await c.execute(sql, args)).fetchall()]

    # -- campaigns -------------------------------------------------------------------
    async def create_campaign(self, name: str, **tun) -> Campaign:
        cols = {k: v for k, v in tun.items() if k in TUNABLE and v is not None}
        if cols.get("abandon_media"):
            check_media(cols["abandon_media"])
        names = ", ".join(["name", *cols])
        marks = ", ".join(["%s"] * (1 + len(cols)))
        try:
            r = await self._one(f"insert into dialer_campaigns ({names}) values ({marks}) returning *",
                                (name, *cols.values()))
        except psycopg.errors.UniqueViolation:
            raise CampaignError(f"campaign {name!r} already exists") from None
        except psycopg.errors.CheckViolation as exc:
            raise CampaignError(f"campaign {name!r}: bad setting: {exc.diag.constraint_name}") from None
        return Campaign.from_row(r)

    async def edit_campaign(self, name: str, **tun) -> Campaign:
        """Change settings of a campaign (those given; `abandon_media=""` clears it):
        the dialer picks them up within a second, also while it runs."""
        cols = {k: (None if k in ("abandon_media", "dialer") and v == "" else v)
                for k, v in tun.items() if k in TUNABLE and v is not None}
        if cols.get("abandon_media"):
            check_media(cols["abandon_media"])
        if not cols:
            raise CampaignError("nothing to change: give at least one setting")
        sets = ", ".join(f"{k} = %s" for k in cols)
        try:
            r = await self._one(f"update dialer_campaigns set {sets}, updated_at = now() where name = %s"
                                " returning *", (*cols.values(), name))
        except psycopg.errors.CheckViolation as exc:
            raise CampaignError(f"campaign {name!r}: bad setting: {exc.diag.constraint_name}") from None
        if r is None:
            raise CampaignError(f"campaign {name!r} does not exist (dialguard campaign create)")
        return Campaign.from_row(r)

    async def campaign(self, name: str) -> Campaign | None:
        r = await self._one("select * from dialer_campaigns where name = %s", (name,))
        return Campaign.from_row(r) if r else None

    async def campaigns(self) -> list[Campaign]:
        return [Campaign.from_row(r) for r in await self._all("select * from dialer_campaigns order by name")]

    async def campaigns_in_play(self, also: set[str]) -> list[Campaign]:
        """Campaigns running or paused, those with work left whatever their state (calls
        not ended, outcomes not reported, leads left dialing: campaigns_with_work), and
        those named in `also` (this dialer's calls up): all a dialer may serve, in one
        query, without reading the stopped and draft ones it never will."""
        return [Campaign.from_row(r) for r in await self._all(
            "select * from dialer_campaigns where state in ('running', 'paused') or name = any(%s)"
            " or name in (" + WITH_WORK_SQL + ") order by name", (sorted(also),))]

    async def set_approval(self, name: str, approved: bool, start: datetime | None = None,
                           end: datetime | None = None, rules: str | None = None) -> Campaign | None:
        r = await self._one(
            "update dialer_campaigns set approved = %s, approved_start = %s, approved_end = %s, rules = %s,"
            " state = case when %s then (case when state = 'draft' then 'approved' else state end)"
            "              else (case when state in ('running', 'paused') then 'stopped' else state end) end,"
            " updated_at = now() where name = %s returning *",
            (approved, start, end, rules, approved, name))
        return Campaign.from_row(r) if r else None

    async def set_state(self, name: str, state: str) -> Campaign:
        assert state in STATES
        c = await self.campaign(name)
        if c is None:
            raise CampaignError(f"campaign {name!r} does not exist (dialguard campaign create)")
        if state == "running" and not c.approved:
            raise CampaignError(f"campaign {name!r} is not approved: only approved campaigns dial "
                                "(dialguard campaign approve)")
        r = await self._one("update dialer_campaigns set state = %s, updated_at = now() where name = %s "
                            "returning *", (state, name))
        return Campaign.from_row(r)

    # -- leads -------------------------------------------------------------------------
    async def add_leads(self, campaign: str, leads: list[Lead], now: datetime | None = None) -> tuple[int, list[Lead]]:
        """Insert leads; returns (added, leads already in the campaign)."""
        if not await self.campaign(campaign):
            raise CampaignError(f"campaign {campaign!r} does not exist (dialguard campaign create)")
        now = now or datetime.now(UTC)
        added: set[tuple[str, str]] = set()
        hashes = {x.number: lead_number_hash(self.secret, x.number) for x in leads}
        async with self.pool.connection() as c:
            async with c.transaction():
                for i in range(0, len(leads), 1000):
                    chunk = leads[i:i + 1000]
                    cur = await c.execute(
                        "insert into dialer_leads (campaign, number_hash, number_enc, subject, name, source_line,"
                        " next_eligible_at, region, postal_code, party_enc)"
                        " select %s, t.h, t.enc, t.subject, t.name, t.line, %s::timestamptz, t.region, t.postal,"
                        " t.party"
                        " from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[],"
                        " %s::text[], %s::text[])"
                        " as t(h, enc, subject, name, line, region, postal, party)"
                        " on conflict (campaign, number_hash, subject) do nothing returning number_hash, subject",
                        (campaign, now, [hashes[x.number] for x in chunk],
                         [self.sealer.seal(x.number) for x in chunk], [x.subject for x in chunk],
                         [x.name for x in chunk], [x.line for x in chunk], [x.region for x in chunk],
                         [x.postal_code for x in chunk],
                         [self.sealer.seal(x.party) if x.party else None for x in chunk]))
                    added.update((r["number_hash"], r["subject"]) for r in await cur.fetchall())
        existing = [x for x in leads if (hashes[x.number], x.subject) not in added]
        return len(added), existing

    async def lead(self, lead_id: int) -> dict | None:
        return await self._one("select * from dialer_leads where id = %s", (lead_id,))

    async def lead_counts(self, campaign: str) -> dict[str, int]:
        """Leads by state; `parked` (pending leads a region kill switch holds) besides."""
        rows = await self._all("select state, count(*) n, count(*) filter (where parked is not null) p"
                               " from dialer_leads where campaign = %s group by state", (campaign,))
        out = {r["state"]: r["n"] for r in rows}
        parked = sum(r["p"] for r in rows)
        if parked:
            out["parked"] = parked
        return out

    # -- leads held back without a decision (dialguard/campaigns/sql/210) ----------------
    async def park_lead(self, lead_id: int, campaign: str, region: str, at: datetime) -> None:
        """A lead a region kill switch holds: back to pending, unchanged due time, parked
        until that region is no longer paused (`unpark`); its hold recorded."""
        await self._one(
            "with l as (update dialer_leads set state = 'pending', parked = %s, updated_at = now()"
            "           where id = %s returning id)"
            " insert into dialer_holds (campaign, reason, detail, lead_id, leads, started_at)"
            " select %s, 'region_paused', %s, id, 1, %s from l returning id",
            (region, lead_id, campaign, region, at))

    async def unpark(self, campaigns: list[str], paused_regions: set[str], at: datetime) -> int:
        """Leads of `campaigns` parked for a region that is no longer paused: due again
        (their holds end at `at`). Returns how many."""
        r = await self._one(
            "with l as (update dialer_leads set parked = null, updated_at = now()"
            "           where campaign = any(%s::text[]) and parked is not null and not (parked = any(%s::text[])) returning id),"
            " h as (update dialer_holds set ended_at = %s where reason = 'region_paused' and ended_at is null"
            "       and lead_id in (select id from l) returning id)"
            " select (select count(*) from l) n",
            (list(campaigns), sorted(paused_regions), at))
        return int(r["n"]) if r else 0

    async def parked_counts(self, campaigns: list[str]) -> dict[str, int]:
        rows = await self._all("select campaign, count(*) n from dialer_leads where campaign = any(%s::text[])"
                               " and parked is not null group by campaign", (list(campaigns),))
        return {r["campaign"]: int(r["n"]) for r in rows}

    async def hold_lead(self, lead_id: int, campaign: str, reason: str, detail: str, at: datetime,
                        until: datetime | None) -> None:
        """One lead held back without a decision until `until` (a closed zone: its opening)."""
        await self._one(
            "insert into dialer_holds (campaign, reason, detail, lead_id, leads, started_at, ended_at)"
            " values (%s, %s, %s, %s, 1, %s, %s) returning id", (campaign, reason, detail, lead_id, at, until))

    async def hold_calendar_unknown(self, lead_id: int, campaign: str, detail: str, at: datetime,
                                    was_due: datetime | None, until: datetime) -> None:
        """One lead held back (`calendar_unknown`, sql/260) until `until`, its next look: the
        hold of its previous look (it ended when the lead became due again, `was_due`) is
        extended, so a wait over days is one row, not one a look."""
        r = await self._one(
            "update dialer_holds set ended_at = %s where lead_id = %s and campaign = %s"
            " and reason = 'calendar_unknown' and detail = %s and ended_at = %s returning id",
            (until, lead_id, campaign, detail, was_due)) if was_due is not None else None
        if r is None:
            await self.hold_lead(lead_id, campaign, "calendar_unknown", detail, at, until)

    async def calendar_waits(self, campaign: str) -> list[dict]:
        """Pending leads waiting for a calendar year to be imported (sql/260), by why."""
        return await self._all(
            "select h.detail, count(distinct h.lead_id)::int leads, min(h.started_at) since from dialer_holds h"
            " join dialer_leads l on l.id = h.lead_id where h.campaign = %s and h.reason = 'calendar_unknown'"
            " and l.state = 'pending' and h.ended_at = l.next_eligible_at group by h.detail order by 3",
            (campaign,))

    async def hold_start(self, campaign: str, reason: str, detail: str, at: datetime) -> None:
        """The whole campaign held back (a kill switch, an abandon limit): one row, with
        the leads due when it began."""
        await self._one(
            "insert into dialer_holds (campaign, reason, detail, leads, started_at)"
            " select %s, %s, %s, count(*), %s from dialer_leads"
            " where campaign = %s and state = 'pending' and parked is null and next_eligible_at <= %s returning id",
            (campaign, reason, detail, at, campaign, at))

    async def open_holds(self, campaign: str) -> list[dict]:
        """What holds the campaign's leads back now: the campaign-wide holds still open,
        and the region kill switches parking its leads (one line per region)."""
        return await self._all(
            "select reason, detail, started_at, leads from dialer_holds"
            " where campaign = %s and ended_at is null and lead_id is null"
            " union all select 'region_paused', parked, min(updated_at), count(*)::int from dialer_leads"
            " where campaign = %s and parked is not null group by parked order by 3", (campaign, campaign))

    async def hold_end(self, campaign: str, reason: str | None, at: datetime) -> list[dict]:
        """End the campaign's open holds of `reason` (None: every campaign-wide one, as a
        dialer taking the campaign over does: it resumes them if still held). Returns the
        rows ended ({id, reason})."""
        return await self._all(
            "update dialer_holds set ended_at = greatest(%s, started_at)"
            " where campaign = %s and ended_at is null and lead_id is null"
            " and (%s::text is null or reason = %s) returning id, reason",
            (at, campaign, reason, reason))

    async def hold_resume(self, hold_id: int, detail: str) -> bool:
        """Open again a campaign-wide hold ended by a takeover (hold_end) that still holds:
        the same row goes on, so its leads are counted once. False if it is not ended."""
        return await self._one("update dialer_holds set ended_at = null, detail = %s"
                               " where id = %s and ended_at is not null and lead_id is null returning id",
                               (detail, hold_id)) is not None

    async def claim_due(self, campaign: str, limit: int, now: datetime,
                        ready_agents: list[str] | None = None, owned_only: bool = False) -> list[dict]:
        """Take up to `limit` due leads and mark them dialing (one transaction; concurrent
        dialers skip each other's rows): higher priority first, then the oldest due. A
        callback owned by an agent is taken only while that agent is in `ready_agents`
        (None: no owned callback is taken); `owned_only` (preview): only those."""
        if limit <= 0:
            return []
        # UPDATE ... RETURNING keeps no order: the taken rows are sorted again.
        return await self._all(
            "with taken as (update dialer_leads l set state = 'dialing', updated_at = now() from ("
            "  select id from dialer_leads where campaign = %s and state = 'pending' and next_eligible_at <= %s"
            "  and parked is null and (owner_agent is null and not %s or owner_agent = any(%s))"
            "  order by priority desc, next_eligible_at, id limit %s for update skip locked) d"
            " where l.id = d.id returning l.*)"
            " select * from taken order by priority desc, next_eligible_at, id",
            (campaign, now, owned_only, list(ready_agents or []), limit))

    async def set_lead(self, lead_id: int, *, priority: int | None = None, owner_agent: str | None = None,
                       callback_at: datetime | None = None, clear_owner: bool = False) -> dict | None:
        """A lead's priority, or a callback owned by an agent at a time (a lead on a call
        keeps its state; a blocked one is never made pending)."""
        return await self._one(
            "update dialer_leads set priority = coalesce(%s, priority),"
            " owner_agent = case when %s then null else coalesce(%s, owner_agent) end,"
            " next_eligible_at = case when %s::timestamptz is null or state = 'dialing' then next_eligible_at"
            "                    else %s::timestamptz end,"
            " state = case when %s::timestamptz is not null and state = 'done' then 'pending' else state end,"
            " updated_at = now() where id = %s returning *",
            (priority, clear_owner, owner_agent, callback_at, callback_at, callback_at, lead_id))

    async def results_of_lead(self, lead_id: int, result: str) -> int:
        """How many of the lead's calls ended with `result` (retry rules by outcome)."""
        r = await self._one("select count(*) n from dialer_calls where lead_id = %s and result = %s",
                            (lead_id, result))
        return int(r["n"])

    # -- agents ------------------------------------------------------------------------
    async def set_agent_state(self, name: str, state: str) -> dict:
        if state not in AGENT_STATES:
            raise CampaignError(f"agent state {state!r}: one of {', '.join(AGENT_STATES)}")
        return await self._one(
            "insert into dialer_agents (name, state) values (%s, %s) on conflict (name) do update"
            " set state = excluded.state, updated_at = now() returning *", (name, state))

    async def agent_states(self) -> dict[str, str]:
        return {r["name"]: r["state"] for r in await self._all("select name, state from dialer_agents")}

    async def preview_next(self, campaign: str, agent: str, now: datetime) -> dict | None:
        """Preview mode: the next due lead (priority, then oldest due), held for `agent`
        until it accepts or skips it (owner set, never due meanwhile); a lead it already
        holds comes back first."""
        held = await self._one(
            "select * from dialer_leads where campaign = %s and state = 'pending' and owner_agent = %s"
            " and next_eligible_at = %s order by id limit 1", (campaign, agent, HELD))
        if held:
            return held
        return await self._one(
            "update dialer_leads l set owner_agent = %s, next_eligible_at = %s, updated_at = now() from ("
            "  select id from dialer_leads where campaign = %s and state = 'pending' and owner_agent is null"
            "  and parked is null and next_eligible_at <= %s order by priority desc, next_eligible_at, id limit 1"
            "  for update skip locked) d where l.id = d.id returning l.*", (agent, HELD, campaign, now))

    async def answer_preview(self, lead_id: int, agent: str, accept: bool) -> dict | None:
        """Accept (due at once whatever the clock, dialed for this agent only) or skip
        (back to every agent, due now) a lead held for `agent`; None when it is not held
        for it."""
        return await self._one(
            "update dialer_leads set next_eligible_at = case when %s then %s else now() end,"
            " owner_agent = case when %s then owner_agent end,"
            " updated_at = now() where id = %s and owner_agent = %s and state = 'pending'"
            " and next_eligible_at = %s returning *", (accept, ACCEPTED, accept, lead_id, agent, HELD))

    async def update_campaign(self, name: str, **tun) -> Campaign:
        cols = {k: v for k, v in tun.items() if k in TUNABLE and v is not None}
        if not cols:
            c = await self.campaign(name)
        else:
            sets = ", ".join(f"{k} = %s" for k in cols)
            try:
                r = await self._one(f"update dialer_campaigns set {sets}, updated_at = now() where name = %s"
                                    " returning *", (*cols.values(), name))
            except psycopg.errors.CheckViolation as exc:
                raise CampaignError(f"campaign {name!r}: bad setting: {exc.diag.constraint_name}") from None
            c = Campaign.from_row(r) if r else None
        if c is None:
            raise CampaignError(f"campaign {name!r} does not exist (dialguard campaign create)")
        return c

    async def release_lead(self, lead_id: int, *, state: str, next_at: datetime | None = None,
                           result: str | None = None, reasons: str | None = None,
                           count_attempt: bool = False) -> None:
        await self._one(
            "update dialer_leads set state = %s, next_eligible_at = coalesce(%s, next_eligible_at),"
            " last_result = coalesce(%s, last_result), last_reasons = %s,"
            " attempts = attempts + %s, updated_at = now() where id = %s returning id",
            (state, next_at, result, reasons, 1 if count_attempt else 0, lead_id))

    async def set_disposition(self, lead_id: int, disposition: str, follow_up: datetime | None) -> dict | None:
        """An agent's disposition. A lead with a call up (`dialing`) keeps its state: the
        dialer applies the disposition when the call ends (`lead_for_call`); setting it
        to pending now would let the lead be claimed again while the call is up."""
        state = "pending" if disposition == "follow-up" else "done"
        return await self._one(
            "update dialer_leads set disposition = %s, disposition_at = now(), follow_up_at = %s,"
            " state = case when state in ('blocked', 'dialing') then state else %s end,"
            " next_eligible_at = case when state in ('blocked', 'dialing') then next_eligible_at"
            "                    else coalesce(%s, next_eligible_at) end,"
            " updated_at = now() where id = %s returning *",
            (disposition, follow_up, state, follow_up, lead_id))

    async def lead_for_call(self, channel_id: str) -> dict | None:
        """The lead of a call, with `disposed`: a disposition was given since the call began."""
        return await self._one(
            "select l.*, coalesce(l.disposition_at >= c.created_at, false) as disposed"
            " from dialer_calls c join dialer_leads l on l.id = c.lead_id where c.channel_id = %s",
            (channel_id,))

    # -- calls ---------------------------------------------------------------------------
    async def new_call(self, channel_id: str, lead_id: int, campaign: str, agent: str | None) -> None:
        await self._one("insert into dialer_calls (channel_id, lead_id, campaign, agent) values (%s, %s, %s, %s)"
                        " returning channel_id", (channel_id, lead_id, campaign, agent))

    async def update_call(self, channel_id: str, **fields) -> None:
        fields = self._sealed(fields)
        sets = ", ".join(f"{k} = %s" for k in fields)
        await self._one(f"update dialer_calls set {sets} where channel_id = %s returning channel_id",
                        (*fields.values(), channel_id))

    async def end_call(self, channel_id: str, **fields) -> bool:
        """Record a call's end once: False when it was already ended (by an earlier
        dialer, or a second path here), so its outcome is reported only once."""
        fields = self._sealed(fields)
        sets = ", ".join(f"{k} = %s" for k in fields)
        r = await self._one(f"update dialer_calls set state = 'ended', {sets} where channel_id = %s"
                            " and state <> 'ended' returning channel_id", (*fields.values(), channel_id))
        return r is not None

    async def mark_originated(self, channel_id: str) -> None:
        await self._one("update dialer_calls set state = 'originated' where channel_id = %s and state = 'reserved'"
                        " returning channel_id", (channel_id,))

    async def call(self, channel_id: str) -> dict | None:
        return await self._one("select * from dialer_calls where channel_id = %s", (channel_id,))

    async def live_calls(self, campaigns: list[str]) -> list[dict]:
        return await self._all("select c.*, l.number_enc, l.subject from dialer_calls c join dialer_leads l"
                               " on l.id = c.lead_id where c.state <> 'ended' and c.campaign = any(%s)",
                               (list(campaigns),))

    async def unreported(self, campaigns: list[str]) -> list[dict]:
        return await self._all("select * from dialer_calls where state = 'ended' and not outcome_reported"
                               " and campaign = any(%s)", (list(campaigns),))

    async def orphan_dialing_leads(self, campaigns: list[str]) -> list[dict]:
        """Leads marked dialing with no live call (the dialer died between claim and call)."""
        return await self._all(
            "select l.* from dialer_leads l where l.state = 'dialing' and l.campaign = any(%s) and not exists ("
            " select 1 from dialer_calls c where c.lead_id = l.id and c.state <> 'ended')", (list(campaigns),))

    async def campaigns_with_work(self) -> set[str]:
        """Campaigns with calls not ended, outcomes not reported or leads left dialing:
        whoever takes such a campaign over finishes that work, running or not."""
        return {r["campaign"] for r in await self._all(WITH_WORK_SQL)}

    async def live_abandon_stats(self, campaign: str, since: datetime, until: datetime) -> tuple[int, int]:
        """(answered by a live person, abandoned) calls of the campaign answered in
        [since, until): the base of a pack's abandon limit (machines, voicemail out)."""
        r = await self._one(LIVE_ABANDON_SQL, {"c": campaign, "a": since, "b": until})
        return int(r["answered"]), int(r["abandoned"])

    async def abandon_clears_at(self, campaign: str, since: datetime, until: datetime,
                                max_pct: float) -> datetime | None:
        """Of a crossed limit over [since, until): the answer time of the oldest call that
        must leave the window before the rest is within `max_pct` (no new call counted);
        the rate is back within the limit one period after it. None: within already."""
        r = await self._one(
            "with w as (select answered_at, coalesce(result = 'abandoned', false)::int ab from dialer_calls"
            "           where campaign = %s and answered_at >= %s and answered_at < %s"
            "           and (result is null or result not in ('amd', 'voicemail'))),"
            " t as (select count(*) n, coalesce(sum(ab), 0) a from w),"
            " c as (select answered_at, count(*) over o n_out, sum(ab) over o a_out from w"
            "       window o as (order by answered_at rows between unbounded preceding and current row))"
            " select case when t.a = 0 or 100.0 * t.a <= (%s + 1e-9) * t.n then null else"
            "   (select min(c.answered_at) from c where t.a - c.a_out = 0"
            "    or 100.0 * (t.a - c.a_out) <= (%s + 1e-9) * (t.n - c.n_out)) end as t from t",
            (campaign, since, until, max_pct, max_pct))
        return r["t"] if r else None

    async def pacing_stats(self, campaign: str, since: datetime, last: int = 500) -> dict:
        """Predictive pacing's measured figures over the campaign's latest ended calls since
        `since` (at most `last`): placed, answered, mean ring and talk seconds."""
        r = await self._one(
            "select count(*) placed, count(answered_at) answered,"
            " coalesce(avg(extract(epoch from answered_at - created_at)), 0)::float ring_s,"
            " coalesce(avg(talk_s) filter (where bridged_at is not null), 0)::float talk_s"
            " from (select * from dialer_calls where campaign = %s and created_at >= %s and state = 'ended'"
            "       and decision_id is not null and coalesce(result, '') not in ('denied', 'error')"
            "       order by created_at desc limit %s) x", (campaign, since, last))
        return dict(r)

    async def held_previews(self, campaign: str, now: datetime) -> dict[str, int]:
        """Preview mode: leads accepted by an agent and due ({agent: count})."""
        rows = await self._all(
            "select owner_agent, count(*) n from dialer_leads where campaign = %s and state = 'pending'"
            " and owner_agent is not null and next_eligible_at <= %s group by owner_agent", (campaign, now))
        return {r["owner_agent"]: int(r["n"]) for r in rows}

    async def abandon_stats(self, campaign: str, day_start: datetime, day_end: datetime) -> tuple[int, int]:
        """(answered, abandoned) calls of the campaign answered in [day_start, day_end)."""
        r = await self._one(
            "select count(*) filter (where answered_at is not null) answered,"
            "       count(*) filter (where result = 'abandoned') abandoned"
            " from dialer_calls where campaign = %s and answered_at >= %s and answered_at < %s",
            (campaign, day_start, day_end))
        return int(r["answered"]), int(r["abandoned"])

    async def abandon_messages(self, campaign: str, day_start: datetime, day_end: datetime,
                               within_ms: int = MESSAGE_WITHIN_MS) -> dict[str, int]:
        """What the campaign's calls abandoned in [day_start, day_end) (by answer time) did
        with their message (dialguard/campaigns/sql/240, 250): begun (then played, cut by
        the callee, or its end not seen), begun later than `within_ms` after the answer,
        failed, the callee gone before it; of all these, those the dialplan handled with
        no dialer (by_dialplan); and those whose message nothing recorded (unknown)."""
        r = await self._one(ABANDON_MESSAGES_SQL, {"c": campaign, "a": day_start, "b": day_end, "w": within_ms})
        out = dict.fromkeys(("abandoned", "begun", "late", "failed", "callee_gone", "by_dialplan", "unknown"), 0)
        out.update({k: int(v) for k, v in (r or {}).items() if k != "campaign"})
        return out


def local_day(now: datetime, tz: str) -> tuple[datetime, datetime]:
    """The site-local calendar day holding `now`, as UTC bounds."""
    z = ZoneInfo(tz)
    local = now.astimezone(z)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=z)
    return start.astimezone(UTC), end.astimezone(UTC)


class CampaignLocks:
    """One dialer per campaign: a session advisory lock per campaign, held on a
    connection of its own. Only the holder dials the campaign, adopts its calls
    after a restart and recovers its orphan leads; when the holder dies (even
    kill -9) PostgreSQL drops its session and its locks, and another dialer
    takes the campaign over."""

    NAMESPACE = 0x64676469  # first key of pg_try_advisory_lock(int, int): "dgdi"
    APP_NAMESPACE = 0x64676161  # "dgaa": one process per Stasis app name (Asterisk gives an
    # app's events to its latest websocket only: a second process would steal them)

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn: psycopg.AsyncConnection | None = None
        self.held: set[str] = set()

    async def _conn(self) -> psycopg.AsyncConnection:
        if self.conn is None or self.conn.closed:
            self.held.clear()  # a new session holds nothing
            self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self.conn

    async def check(self) -> bool:
        """Whether the session (and so every lock in `held`) is still there."""
        if self.conn is None or self.conn.closed:
            self.held.clear()
            return False
        try:
            await (await self.conn.execute("select 1")).fetchone()
            return True
        except psycopg.Error:
            await self.close()
            return False

    async def acquire(self, name: str) -> bool:
        if name in self.held:
            return True
        c = await self._conn()
        r = await (await c.execute("select pg_try_advisory_lock(%s, hashtext(%s))",
                                   (self.NAMESPACE, name))).fetchone()
        if r[0]:
            self.held.add(name)
        return bool(r[0])

    async def acquire_app(self, app: str) -> bool:
        """The Stasis app's lock, kept with the campaigns' (same session)."""
        key = "\0app:" + app  # never a campaign name
        if key in self.held:
            return True
        c = await self._conn()
        r = await (await c.execute("select pg_try_advisory_lock(%s, hashtext(%s))",
                                   (self.APP_NAMESPACE, app))).fetchone()
        if r[0]:
            self.held.add(key)
        return bool(r[0])

    def holds_app(self, app: str) -> bool:
        return "\0app:" + app in self.held

    @property
    def campaigns(self) -> set[str]:
        return {n for n in self.held if not n.startswith("\0")}

    async def release(self, name: str) -> None:
        if name in self.held and self.conn is not None and not self.conn.closed:
            await self.conn.execute("select pg_advisory_unlock(%s, hashtext(%s))", (self.NAMESPACE, name))
        self.held.discard(name)

    async def close(self) -> None:
        self.held.clear()
        if self.conn is not None:
            try:
                await self.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None
