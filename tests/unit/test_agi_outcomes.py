"""agi/outcomes.py: the CEL lines the dialplan writes, and the reader's offset,
replay and rotation (a recording engine; the real path is tests/e2e/test_guard_outcomes.py)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from agi.outcomes import BadLine, OutcomeReader, parse_line

T0 = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)


def line(extra: str, kind: str = "dialguard_outcome", when: str = "1796447036.327") -> str:
    return f'"{when}","{kind}","{json.dumps({"extra": extra}).replace(chr(34), chr(34) * 2)}"'


def test_parse_answered_call_is_a_conversation():
    ev = parse_line(line("v1|did1|1796447034.35234|ANSWER|12|12|16||200|"))
    assert (ev.decision_id, ev.call_id, ev.outcome.result, ev.outcome.talk_s, ev.outcome.hangup_cause) == \
        ("did1", "1796447034.35234", "conversation", 12, 16)
    assert ev.at == pytest.approx(1796447036.327)


def test_parse_not_answered_amd_sip_and_override():
    assert parse_line(line("v1|d|c|BUSY|||17||486|")).outcome.result == "busy"
    assert parse_line(line("v1|d|c|NOANSWER|||19|||")).outcome.result == "no_answer"
    refused = parse_line(line("v1|d|c|CONGESTION|||21||403|")).outcome
    assert (refused.result, refused.sip_code) == ("failed", 403)
    assert parse_line(line("v1|d|c|ANSWER|30|30|16|MACHINE||")).outcome.result == "amd"
    assert parse_line(line("v1|d|c|ANSWER|30|30|16|||abandoned")).outcome.result == "abandoned"
    # An unknown word from the dialplan is ignored, Asterisk's own status is used.
    assert parse_line(line("v1|d|c|ANSWER|0|0|16|||bogus")).outcome.result == "answered"


def test_parse_other_events_and_bad_lines():
    assert parse_line(line("anything", kind="someone_else")) is None
    for bad in ('"1","dialguard_outcome"', line("v2|d|c|ANSWER|1|1|16|||"), line("v1|d|c|ANSWER"),
                line("v1||c|ANSWER|1|1|16|||"), '"1","dialguard_outcome","not json"'):
        with pytest.raises(BadLine):
            parse_line(bad)


class Engine:
    """Records report_outcome calls; fails the first `fail` of them."""

    def __init__(self, fail: int = 0):
        self.calls: list[tuple[str, str, datetime]] = []
        self.subjects: list = []
        self.fail = fail

    async def now(self):
        return T0

    async def report_outcome(self, call_id, outcome, now=None, subject=None):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis away")
        self.calls.append((call_id, outcome.result, now))
        self.subjects.append(subject)
        return True


def write(path, *lines, mode="a"):
    with open(path, mode) as f:
        for text in lines:
            f.write(text + "\n")


async def test_reader_applies_each_line_once_and_resumes_from_saved_offset(tmp_path):
    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|5|5|16|||"), line("v1|d2|c2|BUSY|||17|||"))
    with open(cel, "a") as f:
        f.write(line("v1|d3|c3|ANSWER|5|5|16|||")[:20])  # a record still being written
    eng = Engine()
    r = OutcomeReader(eng, cel, state, retry_s=0)
    r.state.load()
    await r.step()
    await r.step()
    assert [c[:2] for c in eng.calls] == [("c1", "conversation"), ("c2", "busy")]
    # A new reader (a restart) starts at the saved offset; the half record completes.
    with open(cel, "a") as f:
        f.write(line("v1|d3|c3|ANSWER|5|5|16|||")[20:] + "\n")
    eng2 = Engine()
    r2 = OutcomeReader(eng2, cel, state, retry_s=0)
    r2.state.load()
    await r2.step()
    assert [c[:2] for c in eng2.calls] == [("c3", "conversation")]


async def test_reader_keeps_a_line_while_the_engine_fails(tmp_path):
    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|5|5|16|||"), "garbage line", line("v1|d2|c2|NOANSWER|||19|||"))
    eng = Engine(fail=2)
    r = OutcomeReader(eng, cel, state, retry_s=0)
    r.state.load()
    await r.step()
    assert [c[:2] for c in eng.calls] == [("c1", "conversation"), ("c2", "no_answer")]
    assert r.bad == 1
    assert json.loads(state.read_text())["offset"] == os.path.getsize(cel)


async def test_late_outcome_dated_when_asterisk_wrote_it(tmp_path):
    import time

    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|5|5|16|||", when=f"{time.time() - 60:.3f}"))
    eng = Engine()
    r = OutcomeReader(eng, cel, state)
    r.state.load()
    await r.step()
    (_, _, at), = eng.calls
    assert T0 - timedelta(seconds=62) < at <= T0 - timedelta(seconds=59)


async def test_rotation_renames_drains_and_follows_the_new_file(tmp_path, monkeypatch):
    import agi.outcomes as mod

    monkeypatch.setattr(mod, "ROTATE_SETTLE_S", 0)
    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|5|5|16|||"))
    eng = Engine()
    r = OutcomeReader(eng, cel, state, rotate_bytes=10)
    r.state.load()
    await r.step()  # read, then renamed to .old, drained and deleted
    assert not cel.exists() and not (tmp_path / "o.csv.old").exists()
    write(cel, line("v1|d2|c2|BUSY|||17|||"))  # Asterisk starts a new file
    await r.step()
    assert [c[0] for c in eng.calls] == ["c1", "c2"]


async def test_restart_finishes_an_old_file_first(tmp_path, monkeypatch):
    import agi.outcomes as mod

    monkeypatch.setattr(mod, "ROTATE_SETTLE_S", 0)
    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|5|5|16|||"))
    r = OutcomeReader(Engine(), cel, state)
    r.state.load()
    await r.step()
    # Renamed by a reader that died before draining; a record came in after its read.
    write(cel, line("v1|d2|c2|BUSY|||17|||"))
    os.rename(cel, tmp_path / "o.csv.old")
    write(cel, line("v1|d3|c3|BUSY|||17|||"))
    eng = Engine()
    r2 = OutcomeReader(eng, cel, state)
    r2.state.load()
    await r2.step()
    assert [c[0] for c in eng.calls] == ["c2", "c3"]


async def test_other_subjects_in_the_line(tmp_path):
    """An 11th field (DIALGUARD_SUBJECTS, ";"-separated): each other subject of a
    conversation is reported on the call, as `simulate` does; not for a busy call."""
    ev = parse_line(line("v1|d1|c1|ANSWER|30|30|16||200||debt-2;debt-3"))
    assert ev.outcome.result == "conversation" and ev.subjects == ("debt-2", "debt-3")
    assert parse_line(line("v1|d1|c1|ANSWER|30|30|16||200|")).subjects == ()
    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, line("v1|d1|c1|ANSWER|30|30|16||200||debt-2;debt-3"), line("v1|d2|c2|BUSY|||17|||debt-9"))
    eng = Engine()
    r = OutcomeReader(eng, cel, state, retry_s=0)
    r.state.load()
    await r.step()
    assert [c[0] for c in eng.calls] == ["c1", "c1", "c1", "c2"]
    assert eng.subjects == [None, "debt-2", "debt-3", None]


async def test_the_lines_of_one_read_are_applied_together_and_a_failed_one_again(tmp_path):
    """One read's outcomes go to the engine together (their scripts in one write to
    Redis), each applied once; one that fails is retried until it is applied."""
    import asyncio

    class Together(Engine):
        inflight = peak = 0

        async def report_outcome(self, call_id, outcome, now=None, subject=None):
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            await asyncio.sleep(0)
            self.inflight -= 1
            if call_id == "c3" and self.fail:
                self.fail -= 1
                raise ConnectionError("redis away")
            self.calls.append((call_id, outcome.result, now))
            return True

    cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
    write(cel, *(line(f"v1|d{i}|c{i}|ANSWER|5|5|16|||") for i in range(1, 7)))
    eng = Together(fail=2)
    r = OutcomeReader(eng, cel, state, retry_s=0)
    r.state.load()
    await r.step()
    assert eng.peak == 6
    assert sorted(c[0] for c in eng.calls) == [f"c{i}" for i in range(1, 7)]
    assert [c[0] for c in eng.calls][-1] == "c3"  # the failed one, applied on its third try
    assert json.loads(state.read_text())["offset"] == os.path.getsize(cel)
    await r.step()  # nothing new: nothing applied again
    assert len(eng.calls) == 6
