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


def test_message_state_recorded_at_the_end():
    from ari_app.calls import message_at_end

    assert message_at_end(None, None) is None and message_at_end(None, "played") is None  # none was due
    assert message_at_end("abandon", None) == "none"  # the callee was gone before it began
    assert message_at_end("abandon", "started") == "cut"  # its end never seen: the hangup cut it
    for final in ("played", "cut", "failed"):
        assert message_at_end("machine", final) == final


class _Ari:
    """What the life cycle asks of ARI here, with the answer the test sets."""

    def __init__(self, post_error=None):
        self.post_error, self.posts, self.deletes = post_error, [], []

    async def post(self, path, **kw):
        self.posts.append(path)
        if self.post_error:
            raise self.post_error

    async def delete(self, path, **kw):
        self.deletes.append(path)


class _Store:
    def __init__(self):
        self.updates = []

    async def update_call(self, channel_id, **fields):
        self.updates.append((channel_id, fields))


def _life(ari):
    from types import SimpleNamespace

    from ari_app.lifecycle import Lifecycle

    return Lifecycle(SimpleNamespace(app="t"), None, _Store(), ari, None, None,
                     stats={"message_failed": 0}, background=set(), campaign_of=lambda name: None)


async def test_a_play_request_asterisk_refuses_is_a_failed_message_and_the_call_ends_now():
    from ari_app.calls import Call
    from ari_app.client import AriError

    life = _life(_Ari(AriError(400, "POST", "channels/dgc-1/play/dgp-1", "media URI not supported")))
    call = Call(channel_id="dgc-1", lead={}, campaign="c1")
    await life._play_message(call, "abandon", "sound:x")
    assert life.stats["message_failed"] == 1 and call.message_state == "failed"
    assert life.store.updates == [("dgc-1", {"message_state": "failed"})]
    assert life.ari.deletes == ["channels/dgc-1"]  # not held in silence until the bound
    # the channel already gone (404), or the callee's hangup asked: nothing to play to, no failure
    for err, asked in ((AriError(404, "POST", "p", "Channel not found"), False),
                       (AriError(409, "POST", "p", "Channel not in Stasis"), True)):
        life = _life(_Ari(err))
        call = Call(channel_id="dgc-2", lead={}, campaign="c1", hangup_asked=asked)
        await life._play_message(call, "abandon", "sound:x")
        assert life.stats["message_failed"] == 0 and life.store.updates == [] and life.ari.deletes == []
        assert call.message_due == "abandon" and call.message_state is None


async def test_playback_events_record_start_delay_and_how_it_ended():
    from ari_app.calls import Call

    for state, asked, final in (("done", False, "played"), ("failed", True, "cut"), ("failed", False, "failed")):
        life = _life(_Ari())
        call = Call(channel_id="dgc-3", lead={}, campaign="c1", message_due="abandon", abandoned=True,
                    hangup_asked=asked, answered_ts=datetime(2026, 12, 6, 19, 48, 3, 333000, UTC))
        life.calls[call.channel_id] = call
        pb = {"id": "dgp-3", "media_uri": "sound:x"}
        await life.on_event({"type": "PlaybackStarted", "timestamp": "2026-12-06T19:48:05.047+0000",
                             "playback": {**pb, "state": "playing"}})
        assert life.store.updates[0] == ("dgc-3", {"message_state": "started", "message_delay_ms": 1714,
                                                   "message_started_at": datetime(2026, 12, 6, 19, 48, 5, 47000,
                                                                                  UTC)})
        await life.on_event({"type": "PlaybackFinished", "playback": {**pb, "state": state}})
        assert call.message_state == final and life.store.updates[1] == ("dgc-3", {"message_state": final})
        assert life.stats["message_failed"] == (1 if final == "failed" else 0)
        assert life.ari.deletes == ["channels/dgc-3"]  # the message is over: the call ends


def test_the_dialplans_message_record_becomes_the_rows_message_fields():
    from ari_app.lifecycle import message_var, parse_message

    assert message_var("dgc-0123abcd") == "DGAM_0123abcd"
    m = parse_message("played/1796447521.770/1796447520.058")
    assert m == {"message_state": "played", "message_by_dialplan": True, "message_delay_ms": 1712,
                 "message_started_at": datetime.fromtimestamp(1796447521.770, UTC)}
    # still `started` at the hangup: Playback never returned, the callee cut it
    assert parse_message("started/1796447521.770/1796447520.058")["message_state"] == "cut"
    assert parse_message("failed/1796447520.060/1796447520.058")["message_state"] == "failed"
    assert parse_message("none//1796447520.058") == {"message_state": "none", "message_by_dialplan": True}
    assert parse_message("played/1796447520.000/1796447520.058")["message_delay_ms"] == 0  # clock step: not < 0
    for bad in (None, "", "played", "played/1/2/3", "other/1/2", "played//2", "played/x/2", "cut/1/2"):
        assert parse_message(bad) is None, bad


class _EndAri(_Ari):
    """ARI with the globals the dialplan left: read by GET asterisk/variable, deleted by a POST."""

    def __init__(self, globals_: dict):
        super().__init__()
        self.globals = globals_

    async def get(self, path, **kw):
        from ari_app.client import AriError

        if kw["variable"] not in self.globals:
            raise AriError(404, "GET", path, "Provided variable was not found")
        return {"value": self.globals[kw["variable"]]}

    async def post(self, path, **kw):
        self.posts.append((path, kw.get("variable")))


class _EndStore(_Store):
    def __init__(self):
        super().__init__()
        self.ended = []

    async def end_call(self, channel_id, **fields):
        self.ended.append((channel_id, fields))
        return False  # recorded before: nothing reported here


class _Pool:
    async def free_agent_of(self, channel_id):
        pass


async def _finalize(call, globals_):
    from types import SimpleNamespace

    from ari_app.lifecycle import Lifecycle

    ari = _EndAri(globals_)
    life = Lifecycle(SimpleNamespace(app="t"), None, _EndStore(), ari, _Pool(), None,
                     stats={"message_failed": 0, "abandoned": 0}, background=set(), campaign_of=lambda n: None)
    life.calls[call.channel_id] = call
    await life.finalize(call, cause=16)
    [(cid, fields)] = life.store.ended
    return fields, [v for p, v in ari.posts if p == "asterisk/variable"]


async def test_a_call_the_dialplan_abandoned_gets_the_dialplans_message_record():
    """A call answered while no dialer ran (the next dialer finds the trace `fallback`),
    and one a stopping dialer sent to the fallback (drain): the row takes the message's
    state, start and delay the dialplan recorded, marked as the dialplan's, and both
    globals are cleared."""
    from ari_app.calls import Call

    resumed = Call(channel_id="dgc-7", lead={}, campaign="c1", state="originated", resumed=True)
    fields, deleted = await _finalize(resumed, {"DGAB_7": "1796447520.058/1796447524.310/fallback",
                                                "DGAM_7": "played/1796447520.120/1796447520.058"})
    assert fields["result"] == "abandoned" and fields["message_state"] == "played", fields
    assert fields["message_delay_ms"] == 62 and fields["message_by_dialplan"] is True, fields
    assert fields["message_started_at"] == datetime.fromtimestamp(1796447520.120, UTC)
    assert set(deleted) == {"DGAB_7", "DGAM_7"}, deleted

    drained = Call(channel_id="dgc-8", lead={}, campaign="c1", state="answered", abandoned=True, to_fallback=True)
    fields, deleted = await _finalize(drained, {"DGAM_8": "started/1796447520.120/1796447520.058"})
    assert fields["result"] == "abandoned" and fields["message_state"] == "cut" and fields["message_by_dialplan"]
    assert "DGAM_8" in deleted

    # handled by a dialer (trace `stasis`): the dialplan owed nothing, its globals are not asked for
    bridged = Call(channel_id="dgc-9", lead={}, campaign="c1", state="originated", resumed=True)
    fields, deleted = await _finalize(bridged, {"DGAB_9": "1796447520.058/1796447524.310/stasis"})
    assert "message_state" not in fields and "message_by_dialplan" not in fields, fields
    assert deleted == ["DGAB_9"]
