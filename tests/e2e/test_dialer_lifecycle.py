"""Nobody dropped by the dialer's own life cycle (issue #18 item 1), on the real stack.

The dialer runs as its own process (`dialguard dialer run`), killed (SIGKILL) or
stopped (SIGTERM) while its calls ring. The callees end in 55 (scenarios/dialer_carrier):
they ring 3 s, then answer, and send their media to this test's RTP listener. A call
answered while no dialer runs goes through the dialplan's fallback
(extensions_dialguard.conf [dialguard-dialer]): the campaign's abandon message, then
hangup; the next dialer records it as abandoned with the times Asterisk saw.
The campaign's rules add a 72 h quiet period after an abandoned call, and its
retry delay is 1 s: a redial inside the quiet period would show at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta

from sipp import _log_lines, log_time
from test_dialer_calls import NOW, ended_in_asterisk, number, rig, rtp_sink_port  # noqa: F401  (fixture)
from test_dialer_restart import DialerProcess, outcome_records

QUIET = timedelta(hours=72)


class RtpSink:
    """The carrier's media port for the ...55 / ...44 callees: the arrival time of the
    first RTP packet from each Asterisk RTP port."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.first: dict[int, float] = {}
        self.packets: dict[int, int] = {}
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, (_, port) = await loop.sock_recvfrom(self.sock, 2048)
            if len(data) >= 12 and data[0] >> 6 == 2:  # RTP version 2
                self.first.setdefault(port, time.time())
                self.packets[port] = self.packets.get(port, 0) + 1

    def close(self) -> None:
        self.task.cancel()
        self.sock.close()


def carrier_answers(rig) -> list[tuple[str, int, float]]:
    """(number, Asterisk's RTP port, answer time) of every ...55 / ...44 callee."""
    return [(p[1], int(p[2]), log_time(p[3])) for p in _log_lines(rig.carrier._path("log"))
            if len(p) >= 4 and p[0] == "ANSWER"]


def carrier_answer(rig, n: str) -> tuple[int, float]:
    """(Asterisk's RTP port, answer time) of the one call the carrier answered for `n`."""
    [(_, port, at)] = [x for x in carrier_answers(rig) if "+" + x[0].lstrip("+") == n]
    return port, at


async def answered_without_agent(rig, tmp_path, env: dict) -> tuple[RtpSink, str, str, DialerProcess]:
    """One callee (...55: answers after 3 s) dialed by a dialer process whose only agent
    (slow1) never answers, returned once the callee answered: the carrier's RTP sink, the
    number, the campaign (72 h quiet after an abandoned call) and the running dialer."""
    sink = RtpSink(rtp_sink_port(rig.stack))
    n = number("55")
    camp = await quiet_campaign(rig, tmp_path, [n])
    d = DialerProcess(rig, camp, ["slow1"], env=env).start()
    try:
        await wait_calls(rig, camp, 1, "answered", timeout=30)
    except BaseException:
        d.stop()
        sink.close()
        raise
    return sink, n, camp, d


async def quiet_campaign(rig, tmp_path, numbers: list[str], **settings) -> str:
    pack = tmp_path / "quiet.yaml"
    pack.write_text("pack: abandon-quiet-72h\nquiet_after_abandon: {abandoned: 72h}\n")
    settings.setdefault("ring_timeout_s", 15)
    settings.setdefault("retry_after_s", 1)
    settings.setdefault("max_attempts", 3)
    camp = await rig.campaign(numbers, **settings)
    await rig.engine.set_campaign(camp, True, rules=f"cn-default,{pack}")
    return camp


async def wait_calls(rig, camp: str, n: int, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len([c for c in await rig.calls(camp) if c["state"] == state]) < n:
        assert time.monotonic() < deadline, f"not {n} calls {state}: {await rig.calls(camp)}"
        await asyncio.sleep(0.05)


async def redial_after_retry(rig, camp: str, d: DialerProcess) -> None:
    """The campaign's retry delay (1 s) passes on the rules clock while the dialer
    runs: it takes the abandoned leads again, and the guard holds them back until
    the end of their quiet period (no call placed)."""
    await rig.engine.set_test_clock(NOW + timedelta(minutes=2))
    deadline = time.monotonic() + 20
    while True:
        leads = await rig.leads(camp)
        due = [r for r in leads.values() if r["state"] == "dialing"
               or (r["state"] == "pending" and r["next_eligible_at"] <= NOW + timedelta(minutes=2))]
        if not due:
            return
        assert time.monotonic() < deadline, (due, d.output())
        await asyncio.sleep(0.2)


async def check_nobody_dropped(rig, camp: str, numbers: list[str], sink: RtpSink) -> dict[str, int]:
    """Every call the carrier answered is bridged (conversation) or abandoned, never
    no_answer, in PostgreSQL and in the guard's audit; abandoned ones with real times and
    their message heard within 2 s; no abandoned number dialed again inside its quiet period."""
    answered = {"+" + n.lstrip("+"): (port, at) for n, port, at in carrier_answers(rig)}
    calls = await rig.calls(camp)
    leads = await rig.leads(camp)
    by_number: dict[str, list[dict]] = {}
    for c in calls:
        by_number.setdefault(c["number"], []).append(c)
    counts = {"answered": 0, "conversation": 0, "abandoned": 0, "no_answer": 0}
    for n in numbers:
        placed = [c for c in by_number.get(n, []) if c["decision_id"] and c["result"] != "denied"]
        if n not in answered:
            continue
        counts["answered"] += 1
        port, at = answered[n]
        [c] = placed  # answered once, dialed once
        counts[c["result"]] = counts.get(c["result"], 0) + 1
        assert c["result"] in ("conversation", "abandoned"), (n, c)
        # the guard's audit agrees
        [rec] = await outcome_records(rig, c["channel_id"])
        assert json.loads(rec["j"])["res"] == c["result"], rec
        # real times: the answer Asterisk saw (within 1 s of the carrier's 200 OK)
        assert abs(c["answered_at"].timestamp() - at) < 1.0, (c, at)
        assert c["ended_at"] >= c["answered_at"]
        if c["result"] == "abandoned":
            # the message: RTP at the carrier within 2 s of its answer
            assert port in sink.first, (n, port, sink.first)
            heard = sink.first[port] - at
            assert heard < 2.0, (n, heard)
            # and on its row, as the dialplan that played it recorded it (DGAM_): begun within
            # 2 s of the answer by Asterisk's clock, as the carrier heard it, played or cut
            assert c["message_by_dialplan"] and c["message_state"] in ("played", "cut"), c
            assert c["message_delay_ms"] < 2000 and abs(c["message_delay_ms"] / 1000 - heard) < 0.25, (c, heard)
            lead = leads[n]
            # not redialed inside the quiet period (see redial_after_retry): one attempt, and
            # the guard's next eligible time at the end of the quiet period
            assert lead["attempts"] == 1, lead
            if lead["state"] == "pending":
                assert lead["next_eligible_at"] >= NOW + QUIET - timedelta(minutes=1), lead
                assert "post_abandon_quiet" in (lead["last_reasons"] or ""), lead
    assert counts["no_answer"] == 0, counts
    return counts


async def test_sigkill_with_calls_ringing_answered_calls_abandoned_lawfully(rig, tmp_path):
    sink = RtpSink(rtp_sink_port(rig.stack))
    nums = [number("55") for _ in range(3)]
    camp = await quiet_campaign(rig, tmp_path, nums, max_concurrent=3, dial_ratio=3.0)
    d = DialerProcess(rig, camp, ["agent1", "agent2", "agent3"]).start()
    try:
        await wait_calls(rig, camp, 3, "originated")
        d.kill()  # ringing: they answer ~3 s later, with no dialer
        # the dialplan's fallback plays the message and hangs up (was: a fixed 8 s)
        await ended_in_asterisk(rig, [c["channel_id"] for c in await rig.calls(camp)])
        assert not [c for c in await rig.calls(camp) if c["state"] == "ended"]  # nobody recorded them yet
        d.start()
        await rig.settle(camp, timeout=40)
        await redial_after_retry(rig, camp, d)
    finally:
        d.stop()
        sink.close()
    counts = await check_nobody_dropped(rig, camp, nums, sink)
    print("after SIGKILL with 3 calls ringing:", counts)
    assert counts == {"answered": 3, "conversation": 0, "abandoned": 3, "no_answer": 0}, (counts, d.output())
    # the abandoned calls lasted the message (not a hangup at answer)
    for c in await rig.calls(camp):
        if c["result"] == "abandoned":
            assert (c["ended_at"] - c["answered_at"]).total_seconds() > 1.0, c


async def test_sigterm_waits_for_ringing_calls_and_bridges_them(rig, tmp_path):
    sink = RtpSink(rtp_sink_port(rig.stack))
    nums = [number("55") for _ in range(2)]
    camp = await quiet_campaign(rig, tmp_path, nums, max_concurrent=2, dial_ratio=2.0)
    d = DialerProcess(rig, camp, ["agent1", "agent2"], env={"DIALGUARD_DIALER_DRAIN_S": "8"}).start()
    try:
        await wait_calls(rig, camp, 2, "originated")
        t0 = time.monotonic()
        d.stop()  # SIGTERM: waits for the ringing calls (answered ~3 s later), bridges them
        stopped_in = time.monotonic() - t0
        rows = await rig.calls(camp)
        assert sorted(c["state"] for c in rows) == ["bridged", "bridged"], (rows, d.output())
        assert 2.0 < stopped_in < 8.0 + 5, stopped_in
        # the callees hang up 8 s after their answer, while no dialer runs (was: a fixed 9 s)
        await ended_in_asterisk(rig, [c["channel_id"] for c in rows])
        d.start()  # adopts the bridged calls, finds them ended
        await rig.settle(camp, timeout=40)
    finally:
        d.stop()
        sink.close()
    counts = await check_nobody_dropped(rig, camp, nums, sink)
    print("after SIGTERM with 2 calls ringing:", counts, f"stop took {stopped_in:.1f}s")
    assert counts["conversation"] == 2, counts
    for c in await rig.calls(camp):
        # talk time up to the end Asterisk saw, not to when the next dialer looked
        held = (c["ended_at"] - c["answered_at"]).total_seconds()
        assert 6.5 < held < 9.0 and c["talk_s"] <= 8, c
    for a in ("agent1", "agent2"):  # leases released when the calls ended
        assert await rig.engine.redis.exists(rig.engine.keys.agent_lease(a)) == 0


async def test_sigterm_bound_then_restart_ringing_calls_abandoned_not_dropped(rig, tmp_path):
    """The drain's bound shorter than the ring: the dialer stops with calls ringing; they
    answer while it is away (fallback), and the restarted dialer records them abandoned."""
    sink = RtpSink(rtp_sink_port(rig.stack))
    nums = [number("55") for _ in range(2)]
    camp = await quiet_campaign(rig, tmp_path, nums, max_concurrent=2, dial_ratio=2.0)
    d = DialerProcess(rig, camp, ["agent1", "agent2"], env={"DIALGUARD_DIALER_DRAIN_S": "0.5"}).start()
    try:
        await wait_calls(rig, camp, 2, "originated")
        d.stop()
        # they answer while no dialer runs: the fallback's message, hangup (was: a fixed 7 s)
        await ended_in_asterisk(rig, [c["channel_id"] for c in await rig.calls(camp)])
        d.start()
        await rig.settle(camp, timeout=40)
        await redial_after_retry(rig, camp, d)
    finally:
        d.stop()
        sink.close()
    counts = await check_nobody_dropped(rig, camp, nums, sink)
    print("after SIGTERM (bound 0.5 s) and restart with 2 calls ringing:", counts)
    assert counts == {"answered": 2, "conversation": 0, "abandoned": 2, "no_answer": 0}, (counts, d.output())


def tone_wav(path, seconds: float = 3.0) -> None:
    """An admin's abandon message: 8 kHz 16-bit mono (Asterisk's format_wav)."""
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(int(8000 * seconds))))


async def test_campaign_abandon_message_heard_within_2s_of_answer(rig, asterisk):
    """No agent answers in time (slow1 never does): the running dialer abandons the call
    with the campaign's own message, and the carrier receives its audio within 2 s."""
    spool = next(line.split(":", 1)[1].strip() for line in asterisk.rx("core show settings").splitlines()
                 if "Spool directory" in line)
    host_dir = rig.stack.dir / "asterisk" / "sounds"  # the stack's Asterisk folder is its /dialguard
    host_dir.mkdir(exist_ok=True)
    name = f"abandon-{rig.app}"
    tone_wav(host_dir / f"{name}.wav")
    media = f"sound:{spool.rsplit('/', 1)[0]}/sounds/{name}"
    sink = RtpSink(rtp_sink_port(rig.stack))
    n = number("44")
    camp = await rig.campaign([n], abandon_media=media, ring_timeout_s=10)
    try:
        d = rig.start(camp, ["slow1"], abandon_media_max_s=10.0)
        await rig.settle(camp, timeout=40)
    finally:
        sink.close()
        (host_dir / f"{name}.wav").unlink(missing_ok=True)
    [c] = await rig.calls(camp)
    assert c["result"] == "abandoned", c
    [(_, port, at)] = carrier_answers(rig)
    assert port in sink.first, (port, sink.first, d.stats)
    delay = sink.first[port] - at
    print(f"abandon message at the carrier {delay:.2f}s after its answer, {sink.packets[port]} packets")
    assert delay < 2.0, delay
    # the whole 3 s message was played, then the dialer hung up (PlaybackFinished)
    assert sink.packets[port] >= 140, sink.packets[port]  # 20 ms packets
    assert 3.0 <= (c["ended_at"] - c["answered_at"]).total_seconds() < 1.7 + 3.0 + 2.0, c
    # the row: played to its end, begun within 2 s of the answer by Asterisk's clock, as the
    # carrier heard it (the first packet comes a few ms after the start)
    assert c["message_state"] == "played", c
    assert c["message_delay_ms"] < 2000 and abs(c["message_delay_ms"] / 1000 - delay) < 0.25, (c, delay)
    msgs = await rig.store.abandon_messages(camp, c["answered_at"] - timedelta(hours=1),
                                            c["answered_at"] + timedelta(hours=1))
    assert msgs == {"abandoned": 1, "begun": 1, "late": 0, "failed": 0, "callee_gone": 0, "by_dialplan": 0,
                    "unknown": 0}, msgs


async def test_sigkill_between_answer_and_bridge_message_from_asterisk_within_2s(rig, tmp_path):
    """The dialer dies after the customer answered, before an agent is bridged (slow1
    rings and never answers). Before: silence in the customer's ear until a dialer
    started again. Now the absolute timeout the dialer set on the customer at the answer
    takes the call out of Stasis to the context's `T` extension: the campaign's message
    reaches the carrier within 2 s of the answer, Asterisk hangs up, and the next dialer
    records the call abandoned with its real times (not redialed inside the quiet period)."""
    # slow1's lease, held by the killed dialer, frees in 4 s (the redial check needs the agent)
    sink, n, camp, d = await answered_without_agent(rig, tmp_path, {"DIALGUARD_DIALER_AGENT_LEASE_S": "4"})
    try:
        d.kill()
        [c] = await rig.calls(camp)
        # no dialer: Asterisk alone plays the message and hangs up (was: a fixed 8 s)
        await ended_in_asterisk(rig, [c["channel_id"]])
        [c] = await rig.calls(camp)
        assert c["state"] == "answered", c  # nobody recorded it yet
        port, at = carrier_answer(rig, n)
        assert port in sink.first, (port, sink.first, d.output())  # heard before any dialer came back
        d.start()
        await rig.settle(camp, timeout=40)
        await redial_after_retry(rig, camp, d)
    finally:
        d.stop()
        sink.close()
    print(f"dialer killed after the answer: message at the carrier {sink.first[port] - at:.2f}s after its answer")
    counts = await check_nobody_dropped(rig, camp, [n], sink)  # abandoned, message within 2 s
    assert counts == {"answered": 1, "conversation": 0, "abandoned": 1, "no_answer": 0}, (counts, d.output())
    [c] = [x for x in await rig.calls(camp) if x["result"] == "abandoned"]  # the redial was denied (quiet period)
    assert (c["ended_at"] - c["answered_at"]).total_seconds() < 8, c  # hung up by Asterisk, not by the next dialer


async def test_sigterm_after_the_answer_the_dialplans_message_is_on_the_row(rig, tmp_path):
    """A stopping dialer (SIGTERM, drain bound 0.1 s) with a call answered and no agent
    (slow1 never answers) sends it to the dialplan's fallback: the campaign's message,
    then Asterisk's hangup, recorded abandoned by that same dialer before it exits, with
    the message's state, start and delay the dialplan left for it (DGAM_)."""
    sink, n, camp, d = await answered_without_agent(rig, tmp_path, {"DIALGUARD_DIALER_DRAIN_S": "0.1"})
    try:
        await asyncio.to_thread(d.stop)  # once the process exited; the RTP sink reads meanwhile
    finally:
        d.stop()
        sink.close()
    [c] = await rig.calls(camp)
    assert c["state"] == "ended" and c["result"] == "abandoned", (c, d.output())
    port, at = carrier_answer(rig, n)
    assert port in sink.first, (port, sink.first, d.output())
    heard = sink.first[port] - at
    print(f"stopping dialer: the dialplan's message at the carrier {heard:.2f}s after the answer, row {c}")
    assert c["message_by_dialplan"] and c["message_state"] == "played", (c, d.output())
    assert c["message_delay_ms"] < 2000 and abs(c["message_delay_ms"] / 1000 - heard) < 0.25, (c, heard)
    assert abs(c["message_started_at"].timestamp() - sink.first[port]) < 0.25, (c, sink.first[port])
    msgs = await rig.store.abandon_messages(camp, c["answered_at"] - timedelta(hours=1),
                                            c["answered_at"] + timedelta(hours=1))
    assert msgs == {"abandoned": 1, "begun": 1, "late": 0, "failed": 0, "callee_gone": 0, "by_dialplan": 1,
                    "unknown": 0}, msgs
