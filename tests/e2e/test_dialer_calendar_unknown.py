"""A lead whose next time lies in a year the calendar does not know yet (cn-default on
31 December, before the State Council's notice for the next year is imported) stays
pending, held back and looked at again later: it is not closed as if it could never
be called. On the real stack, the dialer on the test clock."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from dialguard.decision.models import DecisionRequest
from test_dialer_calls import number, rig, ticks  # noqa: F401  (fixture)

UTC = timezone.utc
YEAR_END = datetime(2026, 12, 31, 10, 30, tzinfo=UTC)  # Thursday 18:30 Beijing: closed until 2027
IN_2027 = datetime(2027, 1, 4, 2, tzinfo=UTC)           # Monday 10:00 Beijing, 2027 not known


async def looked_at(rig, camp: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        (lead,) = (await rig.leads(camp)).values()
        if lead["last_reasons"] and lead["state"] != "dialing":
            return lead
        assert time.monotonic() < deadline, lead
        await asyncio.sleep(0.1)


async def test_closed_until_an_unknown_year_is_held_not_done(rig, asterisk):
    """The dialer's zone pre-check: no decision, the lead held until its next look."""
    await rig.engine.set_test_clock(YEAR_END)
    camp = await rig.campaign([number("00")])
    d = rig.start(camp, ["agent1"])
    lead = await looked_at(rig, camp)
    assert (lead["state"], lead["last_reasons"], lead["attempts"]) == ("pending", "outside_hours", 0)
    assert lead["next_eligible_at"] == YEAR_END + timedelta(seconds=d.cfg.calendar_retry_s)
    assert not await rig.calls(camp)  # nothing dialed
    (wait,) = await rig.store.calendar_waits(camp)  # what `campaign status` shows
    assert wait["leads"] == 1 and "2027 is not known" in wait["detail"]
    # looked at again (due once more): the same wait, one hold row, extended
    await rig.store._one("update dialer_leads set next_eligible_at = %s where id = %s returning id",
                         (YEAR_END, lead["id"]))
    await rig.store._one("update dialer_holds set ended_at = %s where lead_id = %s returning id",
                         (YEAR_END, lead["id"]))
    await ticks(d, 40)
    (lead,) = (await rig.leads(camp)).values()
    assert lead["state"] == "pending" and lead["next_eligible_at"] > YEAR_END
    rows = await rig.store._all("select * from dialer_holds where lead_id = %s", (lead["id"],))
    assert [(r["reason"], r["ended_at"]) for r in rows] == [("calendar_unknown", lead["next_eligible_at"])]
    # the decision itself: the SPEC's null, its explanation saying the time is unknown
    dec = await rig.engine.decide(DecisionRequest(number=number("00"), campaign=camp, agent="a"))
    assert (dec.reasons, dec.next_eligible_at) == (["outside_hours"], None)
    assert "earliest time is unknown" in dec.explanations["outside_hours"] and "2027" in dec.next_unknown
    assert "next_unknown" not in dec.model_dump_json()


async def test_denied_in_an_unknown_year_stays_pending(rig, asterisk):
    """The decision's path (the pre-check bypassed): a deny whose next time is unknown
    (next_eligible_at null, said in its explanation) is not a cap that never lifts."""
    await rig.engine.set_test_clock(IN_2027)
    camp = await rig.campaign([number("00")])
    d = rig.start(camp, ["agent1"])

    async def no_precheck(c, leads, now):
        return leads
    d._skip_closed = no_precheck
    lead = await looked_at(rig, camp)
    assert (lead["state"], lead["last_result"], lead["last_reasons"]) == ("pending", "denied", "holiday")
    assert lead["next_eligible_at"] == IN_2027 + timedelta(seconds=d.cfg.calendar_retry_s)
    (wait,) = await rig.store.calendar_waits(camp)
    assert wait["leads"] == 1
