"""Audit stream entries -> rows, and migration files (no service needed)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from dialguard.audit import migrate as m
from dialguard.audit.records import reject_of, stream_key, to_batch

UTC = timezone.utc


def decision(did="d1", allow="1", r="", ch="", **j):
    payload = {"did": did, "at": 1795000000123, "n": "h1", "ne": "sealed", "campaign": "c1", "agent": "a1",
               "subject": None, "call_id": "k1", "cid_req": "+862150000001", "pre": ["outside_hours"],
               "rules": "cn-default", "rv": "abc", "node": "n1", **j}
    return {"t": "decision", "id": did, "allow": allow, "r": r, "ch": ch, "j": json.dumps(payload)}


def test_decision_row():
    b = to_batch([("1795000000200-3", decision(r="dnc,attempt_cap", ch="tag1", ts=1795000000150))],
                 short_hash=lambda s: "H" + s)
    assert len(b) == 1 and not b.rejects
    row = dict(zip(("decision_id", "stream_id", "decided_at", "recorded_at", "allowed", "reasons", "pre_reasons",
                    "number_hash", "number_enc", "campaign", "agent", "subject", "call_id", "caller_id_requested",
                    "caller_id_hash", "rules", "rules_version", "node", "latency_ms", "counters", "override_id",
                    "request"), b.decisions[0]))
    assert row["decided_at"] == datetime(2026, 11, 18, 11, 6, 40, 123000, tzinfo=UTC)
    assert row["recorded_at"] == datetime(2026, 11, 18, 11, 6, 40, 200000, tzinfo=UTC)
    assert row["allowed"] is True and row["reasons"] == ["dnc", "attempt_cap"]
    assert row["pre_reasons"] == ["outside_hours"] and row["caller_id_hash"] == "tag1"
    assert row["latency_ms"] == 50.0 and row["counters"] is None
    assert json.loads(row["request"])["did"] == "d1"
    assert b.campaigns == {"c1": "Hc1"} and b.caller_ids == {"tag1": "+862150000001"}


def test_decision_counters_when_the_script_sends_them():
    f = decision(chk={"k0": ["attempt_cap", 2, "per-number-24h"]})
    f["cs"] = "k0:2,k1:0"
    row = to_batch([("1-0", f)]).decisions[0]
    assert json.loads(row[19]) == {"counts": {"k0": 2, "k1": 0}, "checks": {"k0": ["attempt_cap", 2, "per-number-24h"]}}


def test_empty_fields_become_null():
    row = to_batch([("1-0", decision(allow="0", ch=""))]).decisions[0]
    assert row[4] is False and row[5] == [] and row[14] is None


def test_outcome_event_override_admin_rows():
    out = {"t": "outcome", "id": "o1", "did": "", "res": "busy",
           "j": json.dumps({"call_id": "k1", "at": 1000, "res": "busy", "talk_s": 0, "cause": 17, "node": "n"})}
    ev = {"t": "event", "id": "e1", "kind": "opt_out",
          "j": json.dumps({"kind": "opt_out", "n": "h1", "ne": "s", "at": 2000, "campaign": None, "node": "n"})}
    ov = {"t": "override", "id": "v1", "j": json.dumps({"n": "h1", "by": "alice", "why": "callback asked",
                                                        "lifted": ["attempt_cap"], "at": 3000})}
    ad = {"t": "admin", "id": "x1", "j": json.dumps({"action": "pause", "actor": "bob", "target": "all", "at": 4})}
    b = to_batch([("5-0", out), ("6-0", ev), ("7-0", ov), ("8-0", ad), ("9-0", None)])
    assert b.outcomes[0][:7] == ("o1", "5-0", None, "k1", "busy", 0, 17)
    assert b.events[0][:6] == ("e1", "6-0", "opt_out", "h1", "s", None)
    assert b.overrides[0][6:9] == (["attempt_cap"], "alice", "callback asked")
    assert b.admin[0][2:5] == ("pause", "bob", "all")
    assert b.ids == ["5-0", "6-0", "7-0", "8-0", "9-0"]  # a vanished entry is only acknowledged


def cols(row):
    from dialguard.audit.records import DECISION_COLS

    assert len(row) == len(DECISION_COLS)
    return dict(zip(DECISION_COLS, row))


def test_decision_rules_version_shadow_and_override_fields():
    f = decision(allow="1", r="")
    f.update(rver="7", sv="8", sa="0", sr="outside_hours,attempt_cap", ov="g1", ovr="attempt_cap")
    row = cols(to_batch([("1-0", f)]).decisions[0])
    assert (row["rules_seq"], row["shadow_version"], row["shadow_allowed"]) == (7, 8, False)
    assert row["shadow_reasons"] == ["outside_hours", "attempt_cap"]
    assert row["override_id"] == "g1" and row["override_lifted"] == ["attempt_cap"]
    # a shadow that allows: verdict true, no reason (an empty list, not NULL)
    f.update(sa="1", sr="", ov="", ovr="")
    row = cols(to_batch([("1-0", f)]).decisions[0])
    assert row["shadow_allowed"] is True and row["shadow_reasons"] == []
    assert row["override_id"] is None and row["override_lifted"] is None


def test_decision_without_versioned_rules_or_shadow_is_null():
    f = decision()
    f.update(rver="", sv="", sa="", sr="", ov="", ovr="")
    for fields in (f, decision()):  # fields empty, or absent (records written before versioned rules)
        row = cols(to_batch([("1-0", fields)]).decisions[0])
        assert [row[k] for k in ("rules_seq", "shadow_version", "shadow_allowed", "shadow_reasons",
                                 "override_id", "override_lifted")] == [None] * 6
    # the override id may come in the payload only
    assert cols(to_batch([("1-0", decision(ov="g9"))]).decisions[0])["override_id"] == "g9"


def test_decision_calendar_version_and_estimate_fields():
    row = cols(to_batch([("1-0", decision(cal=3, est=["CN"]))]).decisions[0])
    assert (row["calendar_version"], row["calendar_estimated"]) == (3, ["CN"])
    row = cols(to_batch([("1-0", decision(cal=None))]).decisions[0])  # nothing imported, nothing estimated
    assert (row["calendar_version"], row["calendar_estimated"]) == (None, None)
    bad = to_batch([("1-0", decision(est="CN"))])
    assert not bad.decisions and "est" in bad.rejects[0][2]


def test_decision_location_and_party_fields():
    row = cols(to_batch([("1-0", decision(region="US-FL", postal="33101", party="k" * 64))]).decisions[0])
    assert (row["region"], row["postal_code"], row["party_hash"]) == ("US-FL", "33101", "k" * 64)
    row = cols(to_batch([("1-0", decision())]).decisions[0])  # a request without them
    assert (row["region"], row["postal_code"], row["party_hash"]) == (None, None, None)


def rules_entry(**j):
    payload = {"version": 3, "mode": "shadow", "hash": "abc", "name": "cn-default", "spec": "cn-default",
               "files": [{"ref": "cn-default", "text": "limits: {}\n"}], "actor": "alice", "why": "try 3/day",
               "at": 1795000000000, "node": "n1", **j}
    return {"t": "rules", "id": "r1", "j": json.dumps(payload)}


def test_rules_version_row():
    from dialguard.audit.records import RULES_COLS

    b = to_batch([("1795000000005-0", rules_entry())])
    assert not b.rejects and len(b.rules) == 1
    row = dict(zip(RULES_COLS, b.rules[0]))
    assert (row["record_id"], row["version"], row["mode"], row["actor"], row["why"]) == \
        ("r1", 3, "shadow", "alice", "try 3/day")
    assert json.loads(row["files"]) == [{"ref": "cn-default", "text": "limits: {}\n"}]
    assert row["at"] == datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)
    assert to_batch([("1-0", rules_entry(mode="shadow_off", version=None))]).rules[0][2] is None


@pytest.mark.parametrize("fields, error", [
    (rules_entry(mode="dry"), "unknown rules mode"),
    (rules_entry(version="3"), "not an integer"),
    (rules_entry(version=True), "not an integer"),
    (rules_entry(files="x.yaml"), "not a list"),
    ({**decision(), "sa": "yes"}, "shadow verdict"),
    ({**decision(), "rver": "v7"}, "invalid literal"),
])
def test_bad_rules_and_shadow_fields_become_rejects(fields, error):
    b = to_batch([("1-0", fields)])
    assert not b.rules and not b.decisions and len(b.rejects) == 1 and error in b.rejects[0][2]


@pytest.mark.parametrize("fields, error", [
    ({"t": "decision", "id": "d", "j": "{oops"}, "not JSON"),
    ({"t": "decision", "id": "d", "j": json.dumps({"did": "other", "at": 1, "n": "h", "campaign": "c",
                                                   "agent": "a"})}, "differs"),
    ({"t": "decision", "id": "d", "j": json.dumps({"at": 1, "campaign": "c", "agent": "a"})}, "'n' missing"),
    ({"t": "event", "id": "e", "kind": "nope", "j": json.dumps({"n": "h", "at": 1})}, "unknown event kind"),
    ({"t": "weird", "id": "w", "j": "{}"}, "unknown record type"),
])
def test_unreadable_entries_become_rejects(fields, error):
    b = to_batch([("1-0", fields)])
    assert not b.decisions and not b.events and len(b.rejects) == 1 and error in b.rejects[0][2]
    assert json.loads(b.rejects[0][1]) == fields


def test_rejects_never_carry_nul():
    sid, fields, err = reject_of("1-0", {"a": "x\x00y"}, "bad\x00")
    assert "\x00" not in fields and "\\u0000" not in fields and json.loads(fields) == {"a": "x\\x00y"}
    assert err == "bad\\x00"


def test_stream_order():
    ids = ["1700-2", "1700-10", "999-0", "1700-0"]
    assert sorted(ids, key=stream_key) == ["999-0", "1700-0", "1700-2", "1700-10"]


def test_staged_copy_names_the_row_columns_in_order():
    """COPY writes the row tuples as they are: the staging table and the move
    name exactly the row's columns, in order, and the move skips what exists."""
    from dialguard.audit.records import DECISION_COLS, OUTCOME_COLS
    from dialguard.audit.shipper import STAGE_SQL

    for name, cols, row in (("decisions", DECISION_COLS, to_batch([("1-0", decision())]).decisions[0]),
                            ("outcomes", OUTCOME_COLS, to_batch([("2-0", {"t": "outcome", "id": "o", "res": "busy",
                                                                          "j": json.dumps({"at": 1})})]).outcomes[0])):
        create, copy, move = STAGE_SQL[name]
        listed = ", ".join(cols)
        assert len(row) == len(cols)
        assert f"select {listed} from audit_{name} with no data" in create and "on commit delete rows" in create
        assert copy == f"copy dg_stage_{name} ({listed}) from stdin"
        assert move == (f"insert into audit_{name} ({listed}) select {listed} from dg_stage_{name} "
                        "on conflict do nothing")


def test_linger_stays_far_below_the_claim_idle_time():
    """Entries wait unacknowledged while a read lingers; another shipper must not
    take them for a dead consumer's."""
    from dialguard.audit.shipper import LINGER_MS, Shipper

    for claim_ms, linger in ((60_000, LINGER_MS), (500, 125), (0, 0)):
        sh = Shipper(prefix="t", dsn="postgresql://u@127.0.0.1:1/x", claim_idle_ms=claim_ms)
        try:
            assert sh.linger_ms == linger
        finally:
            sh.close()


# -- migration files -----------------------------------------------------------------------------------
def test_discover_and_compare(tmp_path):
    (tmp_path / "010_a.sql").write_text("select 1;")
    (tmp_path / "020_b.sql").write_text("select 2;")
    files = m.discover(tmp_path)
    assert [(f.version, f.name) for f in files] == [(10, "a"), (20, "b")]
    now = datetime.now(UTC)
    applied = [m.Applied(10, "a", files[0].checksum, now, "x"), m.Applied(30, "c", "zz", now, "x")]
    st = m.compare(files, applied)
    assert [p.version for p in st.pending] == [20] and [a.version for a in st.missing] == [30] and not st.ok
    applied[0] = m.Applied(10, "a", "different", now, "x")
    st = m.compare(files, applied[:1])
    assert st.changed and "010_a.sql was changed after it was applied" in st.problems()[0]


@pytest.mark.parametrize("names, error", [
    (["010_a.sql", "10_b.sql"], "two migrations with version 10"),
    (["a.sql"], "named NNN_name.sql"),
])
def test_bad_migration_folders(tmp_path, names, error):
    for n in names:
        (tmp_path / n).write_text("select 1;")
    with pytest.raises(m.MigrationError, match=error):
        m.discover(tmp_path)


def test_shipped_migrations_are_well_formed():
    from dialguard.audit.db import AUDIT_SCHEMA_VERSION, sql_dirs

    files = m.discover(sql_dirs())
    assert AUDIT_SCHEMA_VERSION in [f.version for f in files]
    for f in files:
        text = f.text.lower()
        assert "begin;" not in text and "commit;" not in text, f"{f.filename}: the runner owns the transaction"
