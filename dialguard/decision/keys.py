"""Redis key layout (see docs/REDIS.md).

Every key carries a hash tag naming the entity it belongs to, so that in a
Redis Cluster all keys of one number (or agent, or caller ID) share a slot:

    {P}:{n:<H>}:a:all                 attempts on the number (ZSET did -> ms)
    {P}:{n:<H>}:a:s:<S>               attempts on number+subject
    {P}:{n:<H>}:a:c:<C>               attempts on number+campaign
    <attempt key>:x                   attempts with a reported not-connected outcome
                                      (member "<outcome>|<did>"), counted per rule
    {P}:{n:<H>}:cv:all / cv:s:<S>     conversations (quiet period)
    {P}:{n:<H>}:ab / :am              abandoned calls / answering-machine hang-ups
    {P}:{n:<H>}:f                     flags: dnc, optout, complaint, consent
    {P}:{n:<H>}:dncc                  campaign DNC (set of campaign tags)
    {P}:{a:<A>}:a                     agent attempts
    {P}:{a:<A>}:lease                 dialer's agent lease: o owner, c/l channel ids, hb ms (ari_app/leases.py)
    {P}:{c:<K>}:a / :live             caller-ID attempts / live-call leases (ZSET did -> expiry)
    {P}:{c:<K>}:o / :h                caller-ID outcome log "ms|answered|talk|sip|cause" (LIST, newest
                                      first) / health figures (dialguard/callerid_health.py)
    {P}:{g}:cidpen                    every caller ID's pick penalty: tag -> "<pen>|<until ms>" (outcome.lua;
                                      decide.lua reads a pool window's in one HMGET; ignored from <until>;
                                      the lapsed ones pruned by outcome.lua as the hash grows: field '#prune')
    {P}:{c:<K>}:e                     complaints / opt-outs attributed to the caller ID "ms|c" / "ms|o"
                                      (LIST, newest first, event.lua)
    {P}:{n:<H>}:lc                    the caller ID of the last allowed call to the number "<K>|<health
                                      settings id>" (decide.lua, 30 days): whom a complaint is about
    {P}:{g}:hp:<C>                    caller IDs with outcomes for campaign C (the pool for medians)
    {P}:{g}:hcfg:<id>                 a policy's health settings as outcome.lua reads them
    {P}:{g}:coolwhy                   why each caller ID cools down: tag -> JSON (rule, figures, until)
    {P}:{g}:pause                     kill switches: all, camp:<C>, cid:<K>
    {P}:{g}:camp:<C>                  campaign approval: approved, start, end (ms)
    {P}:{g}:approvals                 approvals applied here, not yet confirmed in PostgreSQL: request id -> JSON
    {P}:{g}:cids / :cool              approved caller IDs / cool-downs
    {P}:{g}:pool[:<C>]                caller IDs the guard may pick (sealed numbers)
    {P}:{dnc}:<list>:<bucket>         DNC lists at scale: 5-byte fingerprints (dialguard/dnc.py)
    {P}:{g}:call:<call id>            call record (what to release on outcome)
    {P}:{g}:audit                     audit stream (shipped to PostgreSQL)
    {P}:{g}:clock                     test clock (only with DIALGUARD_TEST_CLOCK=1)
    {P}:{g}:rules                     rules versions: seq, active, shadow, v:<N> (bundle JSON)
    {P}:{g}:calendars                 calendar versions: seq, active, v:<N> (bundle JSON), m:<N>
    {P}:{n:<H>}:ov                    override grant: id, camp, exp, lifts (used once)
    {P}:{p:<Q>}:a:all / a:s:<S>       attempts on the party / party+subject (caps scoped party)
    {P}:{p:<Q>}:cv:all / cv:s:<S>     the party's conversations (quiet periods scoped party)
    {P}:{p:<Q>}:f                     the party's flags: optout, complaint, consent (read by decide.lua)
    {P}:{p:<Q>}:lc                    the caller ID of the last allowed call with the party (as :lc)

<H> and <K> are keyed hashes (HMAC-SHA256) of the E.164 number, <Q> of the
party id: no plaintext number or party id is ever a key or a value. <S>, <C>, <A> are short hashes of names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dialguard.numbers import keyed_hasher, short_hash


@dataclass(frozen=True)
class Keys:
    prefix: str
    secret: bytes
    # keyed_hash(secret, "n:" / "c:" / "party:" + value), prepared once from this
    # instance's secret (numbers.keyed_hasher): not fields, not compared
    _n: Callable[[str], str] = field(init=False, repr=False, compare=False)
    _c: Callable[[str], str] = field(init=False, repr=False, compare=False)
    _p: Callable[[str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.secret:
            # Fail closed: an empty key would make every number hash public.
            from dialguard.config import INIT_HINT

            raise ValueError(f"DIALGUARD_HASH_SECRET is not set: numbers cannot be hashed; {INIT_HINT}")
        for name, prefix in (("_n", "n:"), ("_c", "c:"), ("_p", "party:")):
            object.__setattr__(self, name, keyed_hasher(self.secret, prefix))  # frozen: set once here

    # -- hashing -----------------------------------------------------------
    def number_tag(self, e164: str) -> str:
        return self._n(e164)

    def cid_tag(self, e164: str) -> str:
        return self._c(e164)

    # -- number --------------------------------------------------------------
    def number_base(self, h: str) -> str:
        """What every key of the number starts with (the call record keeps it for outcome.lua)."""
        return f"{self.prefix}:{{n:{h}}}"

    def num(self, h: str, suffix: str) -> str:
        return f"{self.number_base(h)}:{suffix}"

    def attempts(self, h: str, scope: str, campaign: str | None = None, subject: str | None = None) -> str:
        return self.attempts_hashed(h, scope, short_hash(campaign or "") if scope == "number_campaign" else "",
                                    short_hash(subject or "") if scope == "number_subject" else "")

    def attempts_hashed(self, h: str, scope: str, campaign_hash: str, subject_hash: str) -> str:
        """attempts() with the campaign's and subject's short hashes given (compiled plans)."""
        if scope == "number":
            return self.num(h, "a:all")
        if scope == "number_subject":
            return self.num(h, "a:s:" + subject_hash)
        if scope == "number_campaign":
            return self.num(h, "a:c:" + campaign_hash)
        raise ValueError(scope)

    def conversations(self, h: str, scope: str, subject: str | None = None) -> str:
        return self.conversations_hashed(h, scope, short_hash(subject or "") if scope != "number" else "")

    def conversations_hashed(self, h: str, scope: str, subject_hash: str) -> str:
        if scope == "number":
            return self.num(h, "cv:all")
        return self.num(h, "cv:s:" + subject_hash)

    # -- party (the person behind several numbers; h = party_tag) --------------
    def party_tag(self, party: str) -> str:
        return self._p(party)

    def party_prefix(self, h: str) -> str:
        return f"{self.prefix}:{{p:{h}}}"

    def party_flags(self, h: str) -> str:
        """A party's opt-out / complaint / consent (fields as the number flags'), set by event.lua."""
        return self.party_prefix(h) + ":f"

    def party_attempts_hashed(self, h: str, scope: str, subject_hash: str) -> str:
        """A party's attempt log (scope party or party_subject; compiled plans give the subject's hash)."""
        return self.party_prefix(h) + (":a:all" if scope == "party" else ":a:s:" + subject_hash)

    def party_conversations_hashed(self, h: str, scope: str, subject_hash: str) -> str:
        return self.party_prefix(h) + (":cv:all" if scope == "party" else ":cv:s:" + subject_hash)

    def party_last_caller(self, h: str) -> str:
        """The caller ID of the last allowed call with the party (decide.lua): whom its complaint is about."""
        return self.party_prefix(h) + ":lc"

    def scoped_attempts(self, number_tag: str, party_tag: str | None, scope: str, campaign: str | None = None,
                        subject: str | None = None) -> str:
        """The attempt log of a cap's scope; party scopes without a party are the number's."""
        if scope in ("party", "party_subject"):
            if party_tag:
                return self.party_attempts_hashed(party_tag, scope, short_hash(subject or ""))
            scope = "number" if scope == "party" else "number_subject"
        return self.attempts(number_tag, scope, campaign, subject)

    def scoped_conversations(self, number_tag: str, party_tag: str | None, scope: str,
                             subject: str | None = None) -> str:
        if scope in ("party", "party_subject"):
            if party_tag:
                return self.party_conversations_hashed(party_tag, scope, short_hash(subject or ""))
            scope = "number" if scope == "party" else "number_subject"
        return self.conversations(number_tag, scope, subject)

    def flags(self, h: str) -> str:
        return self.num(h, "f")

    def campaign_dnc(self, h: str) -> str:
        return self.num(h, "dncc")

    def last_caller(self, h: str) -> str:
        return self.num(h, "lc")

    def override(self, h: str) -> str:
        return self.num(h, "ov")

    # -- agent / caller ID ---------------------------------------------------------
    def agent(self, agent: str) -> str:
        return self.agent_hashed(short_hash(agent))

    def agent_hashed(self, agent_hash: str) -> str:
        return f"{self.prefix}:{{a:{agent_hash}}}:a"

    def agent_lease(self, agent: str) -> str:
        """The campaign dialer's lease on an agent (one call at a time across dialers)."""
        return f"{self.prefix}:{{a:{short_hash(agent)}}}:lease"

    def cid_attempts(self, k: str) -> str:
        return f"{self.prefix}:{{c:{k}}}:a"

    def cid_live(self, k: str) -> str:
        return f"{self.prefix}:{{c:{k}}}:live"

    def cid_outcomes(self, k: str) -> str:
        return f"{self.prefix}:{{c:{k}}}:o"

    def cid_events(self, k: str) -> str:
        return f"{self.prefix}:{{c:{k}}}:e"

    def cid_health(self, k: str) -> str:
        return f"{self.prefix}:{{c:{k}}}:h"

    @property
    def cid_penalties(self) -> str:
        """Every caller ID's pool-pick penalty in one hash (tag -> "<pen>|<until ms>"), so that
        decide.lua reads a pool window's in one HMGET. Before, `pen` of `cid_health` (still
        written beside it; read by callerid_health.migrate_penalties for older stores)."""
        return self.g("cidpen")

    @property
    def cid_cool_why(self) -> str:
        return self.g("coolwhy")

    def health_config(self, config_id: str) -> str:
        return self.g("hcfg:" + config_id)

    # -- global --------------------------------------------------------------
    def g(self, suffix: str) -> str:
        return f"{self.prefix}:{{g}}:{suffix}"

    @property
    def pause(self) -> str:
        return self.g("pause")

    @property
    def pause_regions(self) -> str:
        """Kill switches by jurisdiction: region (ISO 3166-2 or -1) -> JSON window."""
        return self.g("pause:region")

    def campaign(self, campaign: str) -> str:
        return self.g("camp:" + short_hash(campaign))

    @property
    def campaigns_with_rules(self) -> str:
        """The names of the campaigns that name rule packs of their own: the
        services' warm-up reads it (their Redis users may not SCAN for them)."""
        return self.g("camprules")

    @property
    def approvals(self) -> str:
        """Four-eyes approvals applied to the store, not yet confirmed in PostgreSQL:
        request id -> JSON (dialguard/approvals.py reconcile)."""
        return self.g("approvals")

    @property
    def approved_cids(self) -> str:
        return self.g("cids")

    def pool(self, campaign: str | None) -> str:
        """Caller IDs the guard may pick: tag -> AES-GCM sealed E.164."""
        return self.g("pool") if not campaign else self.g("pool:" + short_hash(campaign))

    # -- DNC lists at scale (dialguard/dnc.py) ---------------------------------------
    def dnc_bucket(self, list_name: str, bucket: int) -> str:
        return self.dnc_bucket_hex(list_name, f"{bucket:04x}")

    def dnc_bucket_hex(self, list_name: str, bucket_hex: str) -> str:
        return f"{self.prefix}:{{dnc}}:{list_name}:{bucket_hex}"

    def dnc_count(self, list_name: str) -> str:
        return f"{self.prefix}:{{dnc}}:{list_name}:count"

    @property
    def cid_cooldown(self) -> str:
        return self.g("cool")

    def call(self, call_id: str) -> str:
        return self.g("call:" + call_id)

    @property
    def audit(self) -> str:
        return self.g("audit")

    @property
    def clock(self) -> str:
        return self.g("clock")

    @property
    def rules(self) -> str:
        return self.g("rules")

    @property
    def calendars(self) -> str:
        return self.g("calendars")
