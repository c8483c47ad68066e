"""The dialer's call life cycle, its pure parts: the dialplan's trace of an answered
call (extensions_dialguard.conf [dialguard-dialer]) and the abandon message's name."""

from datetime import datetime, timezone

from ari_app.lifecycle import fallback_var, parse_trace, sound_of

UTC = timezone.utc


def test_trace_of_a_call_abandoned_by_the_dialplan():
    a, e, how = parse_trace("1796447520.058/1796447524.310/fallback")
    assert a == datetime.fromtimestamp(1796447520.058, UTC) and e == datetime.fromtimestamp(1796447524.310, UTC)
    assert how == "fallback"
    assert parse_trace("1796447520.058/1796447524.310/stasis")[2] == "stasis"


def test_trace_unset_or_bad_is_no_trace():
    for v in (None, "", "1/2", "x/2/fallback", "1/2/other", "1/2/fallback/4"):
        assert parse_trace(v) is None, v


def test_trace_end_never_before_answer():
    a, e, _ = parse_trace("200.0/100.0/fallback")
    assert e == a


def test_global_name_and_sound():
    assert fallback_var("dgc-0123abcd") == "DGAB_0123abcd"
    assert sound_of("sound:/dialguard/sounds/spring") == "/dialguard/sounds/spring"
    assert sound_of("sound:all-circuits-busy-now") == "all-circuits-busy-now"
    assert sound_of(None) == "" and sound_of("") == ""


def test_ari_event_time_is_asterisks_clock_or_none():
    from ari_app.calls import ari_time

    t = ari_time("2026-12-06T19:48:03.333+0000")
    assert t == datetime(2026, 12, 6, 19, 48, 3, 333000, UTC)
    assert ari_time("2026-12-07T03:48:03.040+0800") == datetime(2026, 12, 6, 19, 48, 3, 40000, UTC)
    # a message's delay is counted between two of them: millisecond resolution
    assert (ari_time("2026-12-06T19:48:05.047+0000") - t).total_seconds() * 1000 == 1714
    for bad in (None, "", 1733514483, "2026-12-06 19:48:03", "2026-12-06T19:48:03.333", "yesterday"):
        assert ari_time(bad) is None, bad
