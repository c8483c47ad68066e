"""outcome.lua keeps a caller ID's health figures as running state (the hash's
'lg' and 's:<pack>'): driven through the real script on the real Redis, every
outcome's stored figures, penalty and triggered rules equal
callerid_health.figures over the same log, whatever the order of outcomes,
resets, configuration changes, other writers and unparsable entries."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from dialguard import callerid_health as chh
from dialguard.decision import scripts
from dialguard.rules import CallerIdHealth, HealthRule

T0 = 1_795_000_000_000
H = 3_600_000
ENTRY = re.compile(r"\d+\|\d\|\d*\|\d*\|\d*")


def rule(id_: str, metric: str, threshold: float, min_calls: int = 0, minutes: int = 30) -> HealthRule:
    return HealthRule(id=id_, metric=metric, threshold=threshold, min_calls=min_calls,
                      cool_down=timedelta(minutes=minutes))


# two packs with different windows, and the same packs changed (a new rules version) mid-stream
A = [("p1", CallerIdHealth(window_calls=5, window_hours=1, short_answer_s=5, rules=(
        rule("run", "consecutive_rejections", 4), rule("cx", "complaints_per_1000", 400, min_calls=3)))),
     ("p2", CallerIdHealth(window_calls=9, window_hours=2, short_answer_s=20, rejection_sip_codes=(403,),
                           rules=(rule("rr", "rejection_rate", 0.8, min_calls=6, minutes=90),
                                  rule("opt", "optouts_per_1000", 500, min_calls=4))))]
B = [("p1", CallerIdHealth(window_calls=7, window_hours=3, short_answer_s=10, rejection_causes=(21, 34),
                           rules=(rule("short", "short_answer_rate", 0.9, min_calls=5),))),
     ("p2", A[1][1])]
CONFIGS = {"A": A, "B": B, "default": [("", chh.DEFAULT)]}

# (answered, talk, sip, cause)
KINDS = [(True, 30, 200, 16), (True, 2, 200, 16), (False, 0, 403, 21), (False, 0, 603, 21), (False, 0, None, 21),
         (False, 0, None, 34), (False, 0, 486, 17), (False, 0, None, None)]

outcome = st.tuples(st.just("outcome"), st.sampled_from(["A"] * 30 + ["B", "default"]),
                    st.sampled_from(range(len(KINDS))),
                    st.sampled_from([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 5, 5, 10, 30, 120]),  # minutes on
                    # the entry this many minutes before now (-1: 1 minute after it, -2: 2 hours after)
                    st.sampled_from([0] * 40 + [1, 30, 90, -1, -2]))
# mostly outcomes in order (the running path), now and then something that must not be run on
op = st.one_of(
    *[outcome] * 60,
    st.tuples(st.just("back"), st.integers(1, 120)),                # the clock goes back (minutes)
    st.tuples(st.just("event"), st.sampled_from("co"), st.integers(0, 90)),
    st.tuples(st.just("garbage"), st.sampled_from(["garbage", "1|2|3", "x|1|3||16"])),
    st.tuples(st.just("trim"), st.integers(0, 6)),
    st.tuples(st.just("since"), st.integers(-60, 60)),              # an admin's reset of the rules' start
)


def _cfg_key(pfx: str, name: str) -> str:
    return f"{pfx}:{{g}}:hcfg:{name}"


def expected(r, pfx: str, ch: str, now: int, since: int, cfgs) -> list[chh.Figures]:
    raw = [x.decode() for x in r.lrange(f"{pfx}:{{c:{ch}}}:o", 0, -1)]
    entries = [chh.Entry.decode(x) for x in raw if ENTRY.fullmatch(x)]
    events = [chh.Event.decode(x) for x in r.lrange(f"{pfx}:{{c:{ch}}}:e", 0, 999)]
    return [chh.figures(entries, now, c, since, events) for _, c in cfgs]


def run_ops(r, ops, check_every: bool = True) -> int:
    """Apply ops through outcome.lua; after each outcome compare with Python. Returns outcomes applied."""
    pfx = f"dgrun:{uuid.uuid4().hex[:10]}"
    ch = "cid0"
    sha = r.script_load(scripts.OUTCOME.source)
    for name in ("A", "B"):
        r.set(_cfg_key(pfx, name), json.dumps([chh._cfg_json(p, c) for p, c in CONFIGS[name]]))
    now = T0
    n = 0
    try:
        for i, o in enumerate(ops):
            if o[0] == "back":
                now -= o[1] * 60_000
                continue
            if o[0] == "event":
                r.lpush(f"{pfx}:{{c:{ch}}}:e", f"{now - o[2] * 60_000}|{o[1]}")
                continue
            if o[0] == "garbage":
                r.lpush(f"{pfx}:{{c:{ch}}}:o", o[1])
                continue
            if o[0] == "trim":  # another writer trims or clears the log
                if o[1]:
                    r.ltrim(f"{pfx}:{{c:{ch}}}:o", 0, o[1] - 1)
                else:
                    r.delete(f"{pfx}:{{c:{ch}}}:o")
                continue
            if o[0] == "lset":  # another writer rewrites the head entry
                if r.llen(f"{pfx}:{{c:{ch}}}:o"):
                    r.lset(f"{pfx}:{{c:{ch}}}:o", 0, o[1])
                continue
            if o[0] == "since":
                r.hset(f"{pfx}:{{c:{ch}}}:h", "since", str(now + o[1] * 60_000))
                continue
            _, cfg, kind, step, late = o
            now += step * 60_000
            at = now - late * 60_000 if late >= 0 else now + (60_000 if late == -1 else 2 * H)
            ans, talk, sip, cause = KINDS[kind]
            entry = chh.Entry(at, ans, talk, sip, cause).encode()
            call = f"{pfx}:call:{i}"
            r.hset(call, mapping={"did": f"d{i}", "ch": ch, "hc": cfg if cfg != "default" else ""})
            since_raw = (r.hget(f"{pfx}:{{c:{ch}}}:h", "since") or b"").decode()
            since = int(float(since_raw or 0))
            res = r.evalsha(sha, 2, call, f"{pfx}:{{g}}:audit", "failed", str(now), "0", "0", "", "1000", "{}",
                            f"o{i}", "", entry, pfx, f"a{i}", str(now), "n1")
            n += 1
            assert res[0] == 1
            cfgs = CONFIGS[cfg]
            figs = expected(r, pfx, ch, now, since, cfgs)
            h = {k.decode(): v.decode() for k, v in r.hgetall(f"{pfx}:{{c:{ch}}}:h").items()}
            for (p, _), f in zip(cfgs, figs):
                assert (int(h[f"calls:{p}"]), int(h[f"ans:{p}"])) == (f.calls, f.answered), (i, p, f, h)
                state = h.get(f"s:{p}", "").split("|")
                if len(state) == 11 and state[3] == since_raw:  # the state the next outcome may run on
                    assert [int(x) for x in state[5:10]] == [f.calls, f.answered, f.short, f.rejected, f.run], \
                        (i, p, f, state)
            want = [(p, x.id) for (p, c), f in zip(cfgs, figs) for x in c.rules if chh.triggers(x, f)]
            why = json.loads(res[2]) if res[2] else {"triggered": []}
            got = [(t["pack"], t["rule"]) for t in why["triggered"]]
            assert got == want, (i, got, want, figs)
            by_pack = dict(zip([p for p, _ in cfgs], figs))
            for t in why["triggered"]:
                f = by_pack[t["pack"]]
                assert (t["calls"], t["answered"], t["short"], t["rejected"], t["run"], t["complaints"],
                        t["optouts"]) == (f.calls, f.answered, f.short, f.rejected, f.run, f.complaints, f.optouts)
            pen = r.hget(f"{pfx}:{{g}}:cidpen", ch)
            if want:
                assert h["pen"] == "0" and pen is None
            else:
                f = figs[0]
                value = min(3.0, f.rejection_rate + 0.5 * f.short_answer_rate + 0.1 * f.run)
                assert h["pen"] == "%.3f" % value
                longest = max(c.window_hours for _, c in cfgs) * H
                assert pen.decode() == "%.3f|%d" % (value, now + longest + 86_400_000)
    finally:
        keys = list(r.scan_iter(match=f"{pfx}:*", count=1000))
        if keys:
            r.delete(*keys)
    return n


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=60, max_size=200))
def test_running_figures_equal_the_recomputation(settings, ops):
    r = syncredis.Redis.from_url(settings.redis_url)
    try:
        run_ops(r, ops)
    finally:
        r.close()


def random_ops(rnd, n: int) -> list[tuple]:
    """n ops, mostly outcomes in order (so windows fill and run on their state), the rest disruptions."""
    out = []
    for _ in range(n):
        x = rnd.random()
        if x < 0.85:
            late = rnd.choice([0] * 30 + [1, 30, 90, -1, -2])
            out.append(("outcome", rnd.choice(["A"] * 25 + ["B", "default"]), rnd.randrange(len(KINDS)),
                        rnd.choice([0, 0, 1, 1, 1, 2, 2, 3, 5, 10, 30, 120]), late))
        elif x < 0.89:
            out.append(("event", rnd.choice("co"), rnd.randrange(90)))
        elif x < 0.91:
            out.append(("back", rnd.randint(1, 60)))
        elif x < 0.93:
            out.append(("garbage", rnd.choice(["garbage", "1|2|3"])))
        elif x < 0.95:
            out.append(("trim", rnd.randint(0, 6)))
        elif x < 0.97:
            out.append(("lset", f"{T0 + rnd.randrange(600) * 60_000}|{rnd.randint(0, 1)}|3|200|16"))
        else:
            out.append(("since", rnd.randint(-60, 60)))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_running_figures_equal_the_recomputation_seeded(settings, seed):
    import random

    r = syncredis.Redis.from_url(settings.redis_url)
    try:
        assert run_ops(r, random_ops(random.Random(seed), 400)) > 300
    finally:
        r.close()


def _o(kind: int = 0, step: int = 1, late: int = 0, cfg: str = "A") -> tuple:
    return ("outcome", cfg, kind, step, late)


SCENARIOS = {
    # the clock goes back with outcomes logged behind it: an entry once out of
    # the time window comes back into it, though the new entry is in order
    "now_back": [_o(0, 30, 30), _o(0, 50, 30), _o(0, 50, 30), ("back", 25), _o(0, 0, 0)],
    # another writer rewrites the head (the log's length unchanged)
    "head_rewritten": [_o(2), _o(2), _o(2), ("lset", f"{T0 + 3 * 60_000}|1|30|200|16"), _o(6), _o(6)],
    # an unparsable entry inside a window full by count: no state on it
    "garbage_in_window": [_o(k % 8) for k in range(7)] + [("garbage", "garbage"), _o(0), _o(2), _o(4), _o(1)],
    # a cool-down whose end is before the log's newest entry: the state is not emptied
    "reset_before_head": [_o(2, 1, -2)] * 4 + [_o(0, 0, -2), _o(2, 0, -2)],
    # a cool-down (4 rejections in a row) and outcomes after it
    "reset": [_o(2)] * 4 + [_o(0, 1), _o(2, 40), _o(1, 1)],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_running_figures_in_the_cases_that_must_not_run_on(settings, name):
    r = syncredis.Redis.from_url(settings.redis_url)
    try:
        assert run_ops(r, SCENARIOS[name]) == sum(1 for o in SCENARIOS[name] if o[0] == "outcome")
    finally:
        r.close()


def test_in_order_outcomes_use_the_state_and_a_late_one_does_not(settings):
    """The state is what the next outcome runs on: a planted figure one answered
    call too many shows in the next in-order outcome's figures (the log was not
    read), and no longer after a late outcome (the log was)."""
    r = syncredis.Redis.from_url(settings.redis_url)
    pfx = f"dgrun:{uuid.uuid4().hex[:10]}"
    ch, hk = "cid1", f"{pfx}:{{c:cid1}}:h"
    sha = r.script_load(scripts.OUTCOME.source)
    r.set(_cfg_key(pfx, "A"), json.dumps([chh._cfg_json(p, c) for p, c in A]))

    def outcome(i: int, now: int, at: int) -> dict:
        call = f"{pfx}:call:{i}"
        r.hset(call, mapping={"did": f"d{i}", "ch": ch, "hc": "A"})
        entry = chh.Entry(at, False, 0, None, None).encode()  # unanswered, not a rejection
        r.evalsha(sha, 2, call, f"{pfx}:{{g}}:audit", "no_answer", str(now), "0", "0", "", "1000", "{}",
                  f"o{i}", "", entry, pfx, f"a{i}", str(now), "n1")
        return {k.decode(): v.decode() for k, v in r.hgetall(hk).items()}

    try:
        for i in range(8):
            h = outcome(i, T0 + i * 60_000, T0 + i * 60_000)
        assert (h["calls:p1"], h["ans:p1"], h["calls:p2"]) == ("5", "0", "8")
        st1 = h["s:p1"].split("|")
        assert st1[:2] == ["A", "1"] and st1[5:10] == ["5", "0", "0", "0", "0"]
        st1[6] = "1"  # one answered call too many
        r.hset(hk, "s:p1", "|".join(st1))
        h = outcome(8, T0 + 8 * 60_000, T0 + 8 * 60_000)
        assert (h["calls:p1"], h["ans:p1"]) == ("5", "1")  # the state, not the log
        r.hset(hk, "s:p1", "|".join(st1))
        h = outcome(9, T0 + 9 * 60_000, T0 + 8 * 60_000 - 1)  # late: older than the head
        assert (h["calls:p1"], h["ans:p1"]) == ("5", "0")  # recomputed from the log
        # the window is then out of time order: no state until it is in order again
        assert h["s:p1"] == "" and h["s:p2"] == ""
        for i in range(10, 16):
            h = outcome(i, T0 + i * 60_000, T0 + i * 60_000)
        assert h["s:p1"].split("|")[5] == "5" and h["s:p2"] == ""  # p2's window (9) still holds it
    finally:
        keys = list(r.scan_iter(match=f"{pfx}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
