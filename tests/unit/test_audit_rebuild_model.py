"""The rebuild's replay of decide.lua / outcome.lua / event.lua writes, in memory."""

from __future__ import annotations

from datetime import datetime, timezone

from dialguard.audit.rebuild import (
    DecisionRec, EventRec, Model, OutcomeRec, Replayer, Summary, at_time, key_kind, write,
)
from dialguard.config import Settings
from dialguard.decision.keys import Keys
from dialguard.numbers import short_hash
from dialguard.decision.plan import ms
from dialguard.rules import Policy

UTC = timezone.utc
T0 = 1_795_000_000_000  # Redis time (stream id ms) of the first record
AT = 1_794_000_000_000  # the rules clock (may differ: replays, test clocks)
H = "ab" * 16
CID = "cd" * 16


def replayer(rules="cn-default") -> Replayer:
    s = Settings()
    return Replayer(s, Keys("p", s.hash_secret), Policy.load(rules))


def dec(did="d1", t=T0, at=AT, **kw) -> DecisionRec:
    base = dict(decision_id=did, stream_id=f"{t}-0", at_ms=at, number_hash=H, campaign="c1", agent="a1",
                subject="s1", call_id="k1", caller_id_hash=CID, rules="cn-default", rules_version=None)
    base.update(kw)
    return DecisionRec(**base)


def out(result, t=T0 + 1000, at=AT + 60_000, oid="o1", subject=None, call_id="k1") -> OutcomeRec:
    return OutcomeRec(oid, f"{t}-0", "d1", call_id, result, at, subject)


def test_model_redis_semantics():
    m = Model()
    m.zadd("k", 0, "a", 1)
    m.pexpire("k", 0, 100)
    assert m.pttl("k", 40) == 60
    m.zrem("k", 50, "a")  # emptied: gone, TTL with it
    assert not m.exists("k") and "k" not in m.exp
    m.pexpire("missing", 0, 100)
    assert "missing" not in m.exp
    m.zadd("k", 0, "a", 1)
    m.pexpire("k", 0, 100)
    m.zadd("k", 100, "b", 2)  # expired before this write: starts empty, no TTL
    assert m.z["k"] == {"b": 2} and m.pttl("k", 100) == -1
    m.zadd("t", 0, "old", 5)
    m.zadd("t", 0, "new", 10)
    m.ztrim_below("t", 0, 10)
    assert m.z["t"] == {"new": 10}


def test_at_time_round_trips():
    for v in (0, 1, 999, AT, AT + 123, 1_795_000_000_999):
        assert ms(at_time(v)) == v


def test_allowed_decision_writes_what_decide_lua_writes():
    r = replayer()
    r.decision(dec())
    k, z = r.keys, r.model.z
    assert z[k.attempts(H, "number")] == {"d1": AT}
    assert z[k.attempts(H, "number_campaign", campaign="c1")] == {"d1": AT}
    assert z[k.agent("a1")] == {"d1": AT}
    assert z[k.cid_attempts(CID)] == {"d1": AT}
    lease = z[k.cid_live(CID)]["d1"]
    assert lease == AT + (1800 + 600) * 1000  # max duration + 10 min
    rec = r.model.h[k.call("k1")]
    assert rec["did"] == "d1" and rec["ch"] == CID and rec["at"] == str(AT)
    assert rec["lv"] == k.cid_live(CID) and rec["nk"] == f"p:{{n:{H}}}"
    ttl = int(r.default_policy.retention().total_seconds() * 1000)
    assert r.model.exp[k.attempts(H, "number")] == T0 + ttl  # Redis time + TTL
    assert r.model.exp[k.call("k1")] == T0 + 2 * 86400 * 1000


def test_not_connected_outcome_moves_the_attempt_to_x_and_releases_the_lease():
    r = replayer()
    r.decision(dec())
    r.outcome(out("busy"))
    k, z = r.keys, r.model.z
    a = k.attempts(H, "number")
    assert a not in z and z[a + ":x"] == {"busy|d1": AT}
    assert r.model.exp[a + ":x"] == T0 + int(r.default_policy.retention().total_seconds() * 1000)
    assert k.cid_live(CID) not in z  # ended: no lease
    assert z[k.agent("a1")] == {"d1": AT}  # the agent log is not in the call record's attempt logs
    assert r.model.h[k.call("k1")]["rep"] == "1"
    before = {kk: dict(v) for kk, v in z.items()}
    r.outcome(out("no_answer", oid="o2"))  # reported twice: nothing changes
    assert {kk: dict(v) for kk, v in z.items()} == before


def test_conversation_quiet_period_per_subject_and_abandon():
    r = replayer("us-regf")
    r.decision(dec(rules="us-regf", caller_id_hash=None))
    r.outcome(out("conversation"))
    r.outcome(out("conversation", oid="o2", subject="other-debt"))  # a second subject in the same call
    k, z = r.keys, r.model.z
    assert z[k.conversations(H, "number_subject", "s1")] == {"d1": AT + 60_000}
    assert z[k.num(H, "cv:s:" + short_hash("other-debt"))] == {"d1": AT + 60_000}
    r2 = replayer("uk-ofcom")
    r2.decision(dec(rules="uk-ofcom", caller_id_hash=None))
    r2.outcome(out("abandoned"))
    assert r2.model.z[r2.keys.num(H, "ab")] == {"d1": AT + 60_000}


def test_outcome_for_an_unknown_or_expired_call_changes_nothing():
    r = replayer()
    r.outcome(out("busy", call_id="nope"))
    r.decision(dec())
    r.outcome(out("busy", t=T0 + 3 * 86400 * 1000))  # the call record expired (2 days)
    assert r.model.z[r.keys.attempts(H, "number")] == {"d1": AT}  # the attempt still counts
    assert r.keys.attempts(H, "number") + ":x" not in r.model.z


def test_events_flags_and_campaign_dnc():
    r = replayer()
    ev = lambda kind, t, campaign=None: EventRec(f"e{t}", f"{T0 + t}-0", kind, H, campaign, AT + t)  # noqa: E731
    for e in (ev("opt_out", 1), ev("consent", 2), ev("consent_revoke", 3), ev("dnc_add", 4),
              ev("dnc_add", 5, "c2"), ev("dnc_add", 6, "c3"), ev("dnc_remove", 7, "c3")):
        r.event(e)
    assert r.model.h[r.keys.flags(H)] == {"optout": str(AT + 1), "dnc": "1"}
    assert r.model.s[r.keys.campaign_dnc(H)] == {short_hash("c2")}
    assert r.keys.flags(H) not in r.model.exp  # permanent


class FakePipe:
    def __init__(self):
        self.calls = []
        self.mappings = {}  # key -> the mapping of its last HSET

    def __getattr__(self, name):
        def call(*a, **kw):
            self.calls.append((name, a))
            if name == "hset" and "mapping" in kw:
                self.mappings[a[0]] = kw["mapping"]
        return call

    def execute(self):
        return []


class FakeRedis:
    def __init__(self):
        self.pipe = FakePipe()

    def pipeline(self, transaction=False):
        return self.pipe


def test_write_skips_expired_keys_and_ended_leases():
    r = replayer()
    r.decision(dec())
    r.decision(dec(did="d2", call_id="k2", number_hash="ef" * 16, t=T0 + 10))
    r.outcome(out("answered"))  # d1's lease released
    fake, s = FakeRedis(), Summary()
    rule_now = AT + 2400 * 1000 + 1  # d2's lease is over too
    write(fake, r.model, T0 + 1000, rule_now, s)
    written = {a[0] for name, a in fake.pipe.calls if name == "zadd"}
    assert r.keys.cid_live(CID) not in written and s.dropped_leases == 1
    assert s.keys["call records"] == 2 and s.keys["attempt logs"] == 4
    pexp = {a[0]: a[1] for name, a in fake.pipe.calls if name == "pexpire"}
    assert 0 < pexp[r.keys.attempts(H, "number")] <= int(r.default_policy.retention().total_seconds() * 1000)
    fake, s = FakeRedis(), Summary()
    write(fake, r.model, T0 + 3 * 86400 * 1000, rule_now, s)  # three days later: call records gone
    assert s.keys["call records"] == 0 and s.expired_keys >= 2


def test_write_drops_lapsed_penalties():
    """The pick penalties the audit replays back into {g}:cidpen that have lapsed by the rules
    clock (until <= now: decide.lua reads them as none) are not written back, as outcome.lua
    prunes them; the live ones are written as they are, and a hash of lapsed ones only not at all."""
    r = replayer()
    k = r.keys.cid_penalties
    r.model.hset(k, T0, {"a1": f"1.000|{AT}", "b2": f"0.500|{AT + 1}", "c3": f"0.200|{AT - 5}",
                         "d4": f"0.000|{AT + 86_400_000}"})
    fake, s = FakeRedis(), Summary()
    write(fake, r.model, T0, AT, s)
    assert fake.pipe.mappings[k] == {"b2": f"0.500|{AT + 1}", "d4": f"0.000|{AT + 86_400_000}"}
    assert s.dropped_penalties == 2 and s.keys["caller-ID health"] == 1
    fake, s = FakeRedis(), Summary()
    write(fake, r.model, T0, AT + 86_400_000, s)  # a day later: every one has lapsed
    assert k not in fake.pipe.mappings and ("delete", (k,)) not in fake.pipe.calls
    assert s.dropped_penalties == 4 and s.keys["caller-ID health"] == 0


def test_key_kinds():
    k = Keys("p", b"s")
    assert key_kind(k.attempts(H, "number")) == "attempt logs"
    assert key_kind(k.attempts(H, "number") + ":x") == "not-connected logs (:x)"
    assert key_kind(k.agent("a")) == "agent logs"
    assert key_kind(k.cid_live(CID)) == "caller-ID leases"
    assert key_kind(k.cid_attempts(CID)) == "caller-ID attempt logs"
    assert key_kind(k.call("x")) == "call records"
    assert key_kind(k.flags(H)) == "flags" and key_kind(k.campaign_dnc(H)) == "campaign DNC sets"
    assert key_kind(k.num(H, "ab")) == "abandon / machine logs"
    assert key_kind(k.conversations(H, "number")) == "conversation logs"
