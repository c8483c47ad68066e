"""The pick penalties hash ({g}:cidpen: tag -> "<pen>|<until ms>") stays bounded: outcome.lua,
when its write adds a field (a caller ID new to the hash), drops lapsed fields (until not after
now, the rules clock: decide.lua reads them as none) one HSCAN step at a time from a cursor kept
in the hash, once it holds more than 256 fields. Before, it kept a field for every caller ID ever used. Driven through the real
script on the real Redis; time is an input (`now`), never the wall clock."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import redis as syncredis

from dialguard import callerid_health as chh
from dialguard.decision import scripts
from dialguard.decision.models import DecisionRequest
from dialguard.decision.plan import ms

T0 = 1_795_000_000_000
DAY = 86_400_000
# what outcome.lua gives a penalty to live for: the default health window, and a day
LIFE = chh.DEFAULT.window_hours * 3_600_000 + DAY
CURSOR = b"#prune"


class Outcomes:
    """outcome.lua for calls that presented the caller ID `ch` (default health settings)."""

    def __init__(self, r, pfx: str):
        self.r, self.pfx, self.n = r, pfx, 0
        self.sha = r.script_load(scripts.OUTCOME.source)
        self.pen = f"{pfx}:{{g}}:cidpen"

    def __call__(self, ch: str, now: int) -> None:
        self.n += 1
        i, call = self.n, f"{self.pfx}:call:{self.n}"
        self.r.hset(call, mapping={"did": f"d{i}", "ch": ch, "hc": ""})
        entry = chh.Entry(now, True, 30, 200, 16).encode()
        res = self.r.evalsha(self.sha, 2, call, f"{self.pfx}:{{g}}:audit", "answered", str(now), "0", "0", "",
                             "1000", "{}", f"o{i}", "", entry, self.pfx, f"a{i}", str(now), "n1")
        assert res[0] == 1, res

    def grow(self, now: int, first: int = 0, limit: int = 40) -> int:
        """Outcomes of caller IDs new to the hash ("new<i>" from `first`: each a pruning step)
        until no lapsed field ("l...") is left; returns how many "new<i>" there are then."""
        n = first
        while any(k.startswith("l") for k in self.fields()):
            self(f"new{n}", now)
            n += 1
            assert n <= limit, "the pruning does not get round the hash"
        return n

    def fields(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.pen).items() if k != CURSOR}


def _drop(r, pfx: str) -> None:
    for k in r.scan_iter(match=f"{pfx}:*", count=1000):
        r.delete(k)


def test_lapsed_penalties_go_as_the_hash_grows_and_live_ones_stay(settings):
    r = syncredis.Redis.from_url(settings.redis_url)
    pfx = f"dgprune:{uuid.uuid4().hex[:10]}"
    o = Outcomes(r, pfx)
    now = T0
    # 400 lapsed (one exactly at now: read as none) and 300 live (more than the 256 fields
    # under which nothing is scanned): the cursor has rounds to make
    lapsed = {f"l{i:03d}": f"0.{i % 10}00|{now - i * 1000}" for i in range(400)}
    live = {f"v{i:03d}": f"1.{i % 10}00|{now + 1 + i * 1000}" for i in range(300)}
    try:
        r.hset(o.pen, mapping={**lapsed, **live})
        # an outcome whose caller ID has its field already adds none: nothing else is touched
        o("v000", now)
        got = o.fields()
        assert len(got) == 700 and CURSOR not in r.hkeys(o.pen)
        assert got["v000"] == f"0.000|{now + LIFE}"  # its own penalty, rewritten
        del live["v000"]
        # outcomes of caller IDs new to the hash: each one a step of the pruning
        steps = o.grow(now)
        got = o.fields()
        # every live penalty as it was, the new ones, nothing lapsed
        assert {k: got[k] for k in live} == live
        assert set(got) == set(live) | {"v000"} | {f"new{i}" for i in range(steps)}
        # about 700 / 32 fields scanned a step: one round of the cursor
        assert 15 <= steps <= 35, steps
    finally:
        _drop(r, pfx)


def test_a_hash_of_256_fields_or_fewer_is_not_scanned(settings):
    """Under PRUNE_FROM (256) a new field costs one HLEN more and nothing is scanned (a hash
    that small may be a listpack, which HSCAN returns whole): its lapsed fields stay until it grows."""
    r = syncredis.Redis.from_url(settings.redis_url)
    pfx = f"dgprune:{uuid.uuid4().hex[:10]}"
    o = Outcomes(r, pfx)
    try:
        r.hset(o.pen, mapping={f"l{i:03d}": f"0.100|{T0 - 1}" for i in range(255)})
        o("new0", T0)  # 256 fields
        assert len(o.fields()) == 256 and CURSOR not in r.hkeys(o.pen)
        n = o.grow(T0, first=1, limit=12)  # 257 and more: steps (a listpack is scanned whole in one)
        assert set(o.fields()) == {f"new{i}" for i in range(n)}
    finally:
        _drop(r, pfx)


def test_a_failing_step_leaves_the_outcome_whole(settings):
    """A pruning step that fails (here a cursor that is not Redis's; in production a guard user
    whose ACL lacks HSCAN) changes nothing of the outcome (applied, status 1: before, the
    health part stopped there, 4, and skipped a cool-down) and the next step starts afresh."""
    r = syncredis.Redis.from_url(settings.redis_url)
    pfx = f"dgprune:{uuid.uuid4().hex[:10]}"
    o = Outcomes(r, pfx)
    try:
        r.hset(o.pen, mapping={**{f"l{i:03d}": f"0.100|{T0 - 1}" for i in range(300)}, "#prune": "not-a-cursor"})
        o("new0", T0)  # asserts status 1
        assert len(o.fields()) == 301 and CURSOR not in r.hkeys(o.pen)
        n = o.grow(T0, first=1, limit=20)
        assert set(o.fields()) == {f"new{i}" for i in range(n)}
    finally:
        _drop(r, pfx)


def test_the_hash_is_bounded_by_the_caller_ids_in_use(settings):
    """Twenty days of 100 new caller IDs a day: before, 2,000 fields in the end; now about the
    caller IDs whose penalties are live (those of the last LIFE), whatever the number of days."""
    r = syncredis.Redis.from_url(settings.redis_url)
    pfx = f"dgprune:{uuid.uuid4().hex[:10]}"
    o = Outcomes(r, pfx)
    days_live = LIFE // DAY + 1
    until: dict[str, int] = {}
    sizes = []
    try:
        for day in range(20):
            now = T0 + day * DAY
            for i in range(100):
                o(f"d{day}c{i}", now + i)
                until[f"d{day}c{i}"] = now + i + LIFE
            got = o.fields()
            # live penalties are never dropped
            assert {c for c, u in until.items() if u > now + 99} <= set(got)
            sizes.append(len(got))
        assert max(sizes) <= 100 * (days_live + 2), sizes
        assert sizes[-1] < 2000 / 4, sizes
    finally:
        _drop(r, pfx)


X, Y, Z = "+862150000001", "+862150000002", "+862150000003"
AT = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai


async def test_decisions_are_the_same_before_and_after_the_pruning(make_engine, rules_file, settings):
    """The pick of a pool reads the penalties as before: X's live one keeps it out, Y's lapsed
    one counted for nothing before it went and counts for nothing after."""
    e = await make_engine(rules_file("pack: open\ndefault_region: CN\n"
                                     f"caller_id: {{pool: ['{X}', '{Y}', '{Z}']}}\n"))
    await e.set_campaign("c1")
    tag = {c: e.keys.cid_tag(c) for c in (X, Y, Z)}
    now = ms(AT)
    later = now + 3_600_000
    await e.redis.hset(e.keys.cid_penalties, mapping={
        tag[X]: f"1.000|{later}", tag[Y]: f"2.000|{now}",
        **{f"gone{i}": f"0.500|{now - 1 - i}" for i in range(300)}})

    async def picks(base: int, at: datetime) -> list[str]:
        out = []
        for i in range(6):
            d = await e.decide(DecisionRequest(number=f"1380013{base + i:04d}", campaign="c1", agent="a1",
                                               call_id=f"call-{base + i}"), now=at)
            assert d.allowed, d.reasons
            out.append(d.caller_id)
        return out

    before = await picks(0, AT)
    assert X not in before and Y in before and Z in before  # X's penalty is live; Y's lapsed one is none
    o = Outcomes(syncredis.Redis.from_url(settings.redis_url), e.keys.prefix)
    n = 0
    while await e.redis.hexists(e.keys.cid_penalties, tag[Y]):
        o(f"other{n}", now)  # caller IDs outside the pool, new to the hash
        n += 1
        assert n <= 40
    pens = await e.redis.hgetall(e.keys.cid_penalties)
    assert not [k for k in pens if k.startswith(b"gone")]
    assert pens[tag[X].encode()] == f"1.000|{later}".encode()
    after = await picks(100, AT)
    assert after == before  # the same picks, in the same order
    # and when X's lapses, it is picked as before (an hour on)
    assert X in await picks(200, AT + timedelta(hours=1))
