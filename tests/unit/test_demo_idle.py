"""The demo waits for its own calls to hang up, not for an Asterisk without any
channel (tests/e2e/guard.py channel_names/idle, scripts/demo.py wait_idle): a call
another caller (or an earlier test) left up no longer costs each wave its 10 s."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from guard import channel_names, idle  # noqa: E402

# `core show channels` of Asterisk 22, a dialer test's bridged call still up
LEFT_UP = """Channel              Location             State   Application(Data)
PJSIP/carrier-0000000b s@dialguard-dialer:3 Up      Stasis(dg-test-879d17,customer)
PJSIP/agent-phones-000 s@dialer-agent-phone Up      Stasis(dg-test-879d17,agent,dgc-
2 active channels
1 active call
270 calls processed
"""
WAVE = LEFT_UP.replace("2 active channels", "PJSIP/agents-0000010f  s@dialguard-dial:5  Up      Dial(PJSIP/138...)\n"
                       "3 active channels")
IDLE = "Channel              Location             State   Application(Data)\n0 active channels\n0 active calls\n"


def test_channel_names() -> None:
    assert channel_names(LEFT_UP) == {"PJSIP/carrier-0000000b", "PJSIP/agent-phones-000"}
    assert channel_names(IDLE) == set()
    assert channel_names("") is None  # no answer from the CLI: not idle


def test_idle_despite_a_call_left_up_before() -> None:
    before = channel_names(LEFT_UP)
    assert not idle(before, channel_names(WAVE))  # the wave's call is still up
    assert idle(before, channel_names(LEFT_UP))  # only what was there before: idle
    assert idle(set(), channel_names(IDLE))
    assert not idle(set(), channel_names(LEFT_UP))
    assert not idle(before, None)


def test_the_demo_waits_on_it() -> None:
    demo = (Path(__file__).resolve().parents[2] / "scripts" / "demo.py").read_text()
    assert "idle(before, channels())" in demo and "channels count" not in demo
