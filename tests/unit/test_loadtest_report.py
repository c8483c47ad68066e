"""dialguard loadtest: reading SIPp's logs into the report (no SIPp here)."""

from __future__ import annotations

from pathlib import Path

from dialguard.loadtest import LoadtestError, Options, _read, render, run, scenario

import pytest


def stamp(t: float) -> str:
    return f"2026-01-01\t10:00:00.000000\t{t:.6f}"


def test_counts_rates_and_pdd(tmp_path: Path) -> None:
    log = [f"INVITE;139;c1;{stamp(100.0)}", f"RING;139;c1;{stamp(100.010)}", f"ANSWER;139;c1;{stamp(100.5)}",
           f"INVITE;138;c2;{stamp(100.1)}", f"REJECT;138;c2;403;{stamp(100.120)}",
           f"INVITE;137;c3;{stamp(100.2)}", f"REJECT;137;c3;503;{stamp(100.230)}",
           f"INVITE;136;c4;{stamp(100.3)}"]
    (tmp_path / "callers.log").write_text("\n".join(log) + "\n")
    (tmp_path / "carrier.log").write_text(f"INVITE;139;cid;x;cid;{stamp(100.005)}\nANSWER;x;{stamp(100.4)}\n")
    p = _read("agents", tmp_path)
    assert (p.placed, p.answered, p.denied, p.unavailable, p.unanswered, p.carrier_invites) == (4, 1, 1, 1, 1, 1)
    assert p.calls_per_s == 10.0
    assert p.pdd_ms["max"] == 30.0 and p.pdd_ms["p50"] == 20.0


def test_render_names_every_count() -> None:
    side = {"caller": "agents", "placed": 2, "answered": 1, "rejected": {"403": 1}, "unanswered": 0,
            "carrier_invites": 1, "calls_per_s": 10.0, "pdd_ms": {"p50": 5.0, "p95": 9.0, "max": 9.0},
            "denied": 1, "unavailable": 0}
    text = render({"pbx": "h:1", "rate": 10, "duration_s": 3, "guarded": side, "plain": side,
                   "pdd_added_ms": {"p50": 0.0, "p95": 0.0}})
    assert "placed 2, answered 1, denied (403) 1" in text and "reached carrier 1" in text
    assert "PDD added by the guard: p50 0.0 ms" in text


def test_scenarios_ship_with_the_package() -> None:
    assert scenario("uac.xml").is_file() and scenario("uas.xml").is_file()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadtestError, match="no numbers"):
        run(Options(pbx="127.0.0.1:1", caller="a", numbers=[], workdir=tmp_path))
    with pytest.raises(LoadtestError, match="positive"):
        run(Options(pbx="127.0.0.1:1", caller="a", numbers=["1"], rate=0, workdir=tmp_path))
