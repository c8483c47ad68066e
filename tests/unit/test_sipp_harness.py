"""The SIPp result parsers of the e2e harness (tests/e2e/sipp.py), on SIPp's file formats."""

from __future__ import annotations

from pathlib import Path

from sipp import (  # tests/e2e/sipp.py, on sys.path through tests/conftest.py
    AGENTS_UAC, CARRIER_UAS, CarrierInvite, Sipp, UacCall, parse_stat_csv, parse_uac_log,
    parse_uas_log, read_injection, write_injection,
)

# Header and rows as SIPp 3.6 writes them with -trace_stat (shortened).
STAT = (
    "StartTime;LastResetTime;CurrentTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);"
    "SuccessfulCall(C);FailedCall(P);FailedCall(C);\n"
    "2026-01-01\t10:00:00.0\t1.0;2026-01-01\t10:00:00.0\t1.0;2026-01-01\t10:00:00.0\t1.0;0;0;0;0;0;0;\n"
    "2026-01-01\t10:00:01.0\t2.0;2026-01-01\t10:00:01.0\t2.0;2026-01-01\t10:00:01.0\t2.0;5;0;4;4;1;1;\n"
)


def test_stat_csv_gives_the_last_row_by_column(tmp_path: Path) -> None:
    stat = tmp_path / "stat.csv"
    stat.write_text(STAT)
    row = parse_stat_csv(stat)
    assert row["TotalCallCreated"] == "5"
    assert row["SuccessfulCall(C)"] == "4"
    assert row["FailedCall(C)"] == "1"


def test_uac_log_separates_answers_from_rejections(tmp_path: Path) -> None:
    log = tmp_path / "agents.log"
    log.write_text("13800138000;answered\n+8613900139000;rejected;403\n\n")
    assert parse_uac_log(log) == [UacCall("13800138000", "answered"), UacCall("+8613900139000", "rejected", 403)]


def test_uas_log_gives_number_from_and_call_id(tmp_path: Path) -> None:
    log = tmp_path / "carrier.log"
    log.write_text("INVITE;13800138000;agents;abc-1\nINVITE;+12025550123;+8610000;abc-2\n")
    assert parse_uas_log(log) == [CarrierInvite("13800138000", "agents", "abc-1"),
                                  CarrierInvite("+12025550123", "+8610000", "abc-2")]
    assert parse_uas_log(tmp_path / "missing.log") == []


def test_injection_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    assert write_injection(path, [("13800138000", "c1", "a1"), ("13800138001", "c1", "a2")]) == 2
    assert path.read_text().splitlines()[0] == "SEQUENTIAL"
    assert read_injection(path) == [["13800138000", "c1", "a1"], ["13800138001", "c1", "a2"]]


def test_sipp_command_binds_loopback_and_traces(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sipp.sipp_binary", lambda: "sipp")
    cmd = Sipp("agents", AGENTS_UAC, tmp_path, 15080, remote="127.0.0.1:15060", calls=3, rate=5,
               keys={"caller": "direct"}).command()
    assert cmd[cmd.index("-i") + 1] == "127.0.0.1" and cmd[cmd.index("-p") + 1] == "15080"
    assert {"-trace_stat", "-trace_err", "-trace_logs", "-nostdin"} <= set(cmd)
    assert cmd[cmd.index("-m") + 1] == "3" and cmd[-1] == "127.0.0.1:15060"
    assert cmd[cmd.index("-key") + 1: cmd.index("-key") + 3] == ["caller", "direct"]
    assert AGENTS_UAC.exists() and CARRIER_UAS.exists()
