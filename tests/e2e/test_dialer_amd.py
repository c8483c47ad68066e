"""Answering-machine detection on the real stack (issue #18 item 5): Asterisk's AMD() on the
customer's leg (context dialguard-amd) before any agent is offered the call.

The carrier (scenarios/dialer_amd) plays RTP written by rtp_pcap.py: a number ending
in 55 answers with a machine's greeting (4 s of continuous sound), any other with a
person ("hello", 0.4 s, then silence)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rtp_pcap import silence, tone, write_pcap
from sipp import SCENARIOS, Sipp
from test_dialer_calls import die, invites, number, open_rig  # noqa: F401


@pytest.fixture
async def amd_rig(stack, pg_dsn, redis_url, tmp_path):
    async with open_rig(stack, pg_dsn, tmp_path) as rig:
        machine = write_pcap(tmp_path / "machine.pcap", tone(4.0) + silence(1.0))
        person = write_pcap(tmp_path / "person.pcap", tone(0.4) + silence(8.0))
        xml = (SCENARIOS / "dialer_amd" / "carrier.xml").read_text()
        xml = xml.replace("@@MACHINE_PCAP@@", str(machine)).replace("@@HUMAN_PCAP@@", str(person))
        scenario = tmp_path / "amd_carrier.xml"
        scenario.write_text(xml)
        rig.carrier.stop(grace=3)  # the rig's carrier gives way to this one, on its port
        carrier = Sipp("dialer-amd-carrier", scenario, tmp_path, stack.carrier_port, timeout_s=600)
        carrier.start().wait_ready()
        try:
            yield rig
        finally:
            carrier.stop(grace=3)


async def test_machine_is_not_bridged_and_ends_as_amd(amd_rig):
    rig = amd_rig
    n = number("55")
    camp = await rig.campaign([n], amd=True, amd_action="hangup", retry_rules="amd=1d/1")
    d = rig.start(camp, ["amdagent1"])
    leads = await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["result"] == "amd" and c["amd_status"] == "MACHINE", c
    assert c["amd_cause"] and c["bridged_at"] is None and c["answered_at"] is not None
    assert c["outcome_reported"]  # `amd` reached the guard
    assert c["ended_at"] - c["answered_at"] < timedelta(seconds=6)  # analysis (<= 5 s), then hung up
    assert invites(rig.agents) == []  # no agent was ever called
    assert d.stats["machines"] == 1 and d.stats["abandoned"] == 0
    assert leads[n]["state"] == "done" and leads[n]["last_result"] == "amd"  # amd=1d/1: one machine, done


async def test_machine_hears_the_campaigns_message(amd_rig):
    rig = amd_rig
    camp = await rig.campaign([number("55")], amd=True, amd_action="message", amd_media="sound:vm-goodbye")
    rig.start(camp, ["amdagent2"])
    await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["result"] == "amd" and c["bridged_at"] is None, c
    # the message began after the detection (seconds into the greeting) and was heard out
    # or cut by the machine's hangup: never failed
    assert c["message_state"] in ("played", "cut") and c["message_delay_ms"] > 1000, c
    assert invites(rig.agents) == []


async def test_person_is_bridged_after_detection(amd_rig):
    rig = amd_rig
    camp = await rig.campaign([number("00")], amd=True)
    rig.start(camp, ["amdagent3"])
    await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["amd_status"] == "HUMAN", c
    assert c["result"] == "conversation" and c["agent"] == "amdagent3", c
    assert [i.number for i in invites(rig.agents)] == ["amdagent3"]


async def test_amd_off_never_runs_detection(amd_rig):
    rig = amd_rig
    camp = await rig.campaign([number("55")])
    rig.start(camp, ["amdagent4"])
    await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["amd_status"] is None and c["result"] == "conversation", c  # a machine, bridged: AMD is off


async def test_dialer_restart_during_detection(amd_rig):
    """The dialer dies while AMD() listens to a machine; the next one ends the call as the
    detection says: `amd`, reported to the guard once, never bridged, the lead done."""
    import asyncio
    import time

    rig = amd_rig
    n = number("55")
    camp = await rig.campaign([n], amd=True, amd_action="hangup", retry_rules="amd=1d/1")
    rig.start(camp, ["amdagent5"])
    from ari_app.client import AriClient

    # killed once AMD() listens (about 4 s of greeting), not merely once the answer is
    # stored: killed between the two, the call is answered with no detection and the
    # next dialer lawfully abandons it (CI, 2026-12-06: a kill landed there under load)
    ari = AriClient(rig.stack.ari_url, rig.stack.ari_user, rig.stack.ari_password, rig.app)
    deadline = time.monotonic() + 20
    try:
        while True:
            assert time.monotonic() < deadline, "AMD() never started on the machine's call"
            ids = {c["channel_id"] for c in await rig.calls(camp) if c["answered_at"] is not None}
            if any(ch["id"] in ids and (ch.get("dialplan") or {}).get("context") == "dialguard-amd"
                   for ch in await ari.get("channels")):
                break
            await asyncio.sleep(0.05)
    finally:
        await ari.close()
    _, task = rig.dialers.pop()
    await die(task)
    d2 = rig.start(camp, ["amdagent5"])
    leads = await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["result"] == "amd" and c["bridged_at"] is None and c["outcome_reported"], c
    assert invites(rig.agents) == []
    assert leads[n]["state"] == "done" and leads[n]["attempts"] == 1, leads[n]
    assert d2.stats["machines"] == 1 and d2.stats["abandoned"] == 0  # the new dialer heard the verdict


async def test_dialer_dying_between_the_answer_and_detection(amd_rig):
    """The dialer's close lands while it stores the answer (its cancel swallowed on the
    way, as psycopg_pool's waits can): the dying dialer neither offers the call to an
    agent nor abandons it; the next one adopts an answered call that no AMD() listens
    to, too late to bridge lawfully, and abandons it. Nobody is ever bridged."""
    import asyncio

    rig = amd_rig
    n = number("55")
    camp = await rig.campaign([n], amd=True, amd_action="hangup", retry_rules="amd=1d/1")
    d1 = rig.start(camp, ["amdagent6"])
    _, task = rig.dialers.pop()
    real_update = rig.store.update_call
    closed = asyncio.Event()

    async def update_then_close(ch, **fields):
        await real_update(ch, **fields)
        if fields.get("state") == "answered" and not closed.is_set():
            rig.store.update_call = real_update
            d1.ari._closed = True  # what close() sets; its cancel of this handler is lost
            closed.set()

    rig.store.update_call = update_then_close
    try:
        await asyncio.wait_for(closed.wait(), 30)
        await asyncio.sleep(0.5)  # the handler goes on past its lost cancel
        [call] = d1.calls.values()
        # not offered (no agent sought, no bridge deadline), not abandoned
        assert [t.get_coro().__name__ for t in call.tasks] == ["_max_duration"], call.tasks
        assert not call.abandoned and call.amd == "pending", call
        assert d1.stats["abandoned"] == 0 and d1.pool.agents["amdagent6"].call is None
    finally:
        rig.store.update_call = real_update
        await die(task)
    d2 = rig.start(camp, ["amdagent6"])
    leads = await rig.settle(camp, timeout=60)
    [c] = await rig.calls(camp)
    assert c["result"] == "abandoned" and c["bridged_at"] is None and c["outcome_reported"], c
    assert invites(rig.agents) == []
    assert d2.stats["abandoned"] == 1 and leads[n]["attempts"] == 1, (d2.stats, leads[n])


async def test_dialer_dying_after_detection_message_from_asterisk(amd_rig):
    """A person back from AMD(), offered to an agent who never answers (slow1), and the
    dialer dies: the dead man armed at the end of the analysis takes the call out of
    Stasis to [dialguard-amd]'s `T`, which is [dialguard-dialer]'s: the abandon message,
    then hangup, the dialplan's trace `fallback` (without that `T`: a hangup in silence)."""
    import asyncio
    import time

    from ari_app.client import AriClient
    from ari_app.lifecycle import fallback_var
    from test_dialer_calls import ended_in_asterisk

    rig = amd_rig
    camp = await rig.campaign([number("00")], amd=True)
    rig.start(camp, ["slow1"])
    deadline = time.monotonic() + 30
    while not (human := [c for c in await rig.calls(camp) if c["amd_status"] == "HUMAN"]):
        assert time.monotonic() < deadline, "no verdict HUMAN"
        await asyncio.sleep(0.05)
    _, task = rig.dialers.pop()
    await die(task)
    cid = human[0]["channel_id"]
    await ended_in_asterisk(rig, [cid], timeout=10)
    ari = AriClient(rig.stack.ari_url, rig.stack.ari_user, rig.stack.ari_password, rig.app)
    try:
        trace = (await ari.get("asterisk/variable", variable=fallback_var(cid)))["value"]
    finally:
        await ari.close()
    assert trace.endswith("/fallback"), trace
