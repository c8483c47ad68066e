"""A dialer's task cancelled once ends, wherever the cancel lands.

The CI run of 2026-12-05 hung 18 min: a test cancelled a dialer's task and the
dialer kept ticking. These tests cancel running dialers (real Redis, PostgreSQL and
Asterisk ARI) at many points of their pacing loop, once each, and require every
task to end with CancelledError within a bound.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import ari_app
from ari_app import metrics as m
from test_dialer_calls import number, rig  # noqa: F401  (fixture)

# how many cancels each test lands (DIALGUARD_CANCEL_ROUNDS: more for a soak)
ROUNDS = int(os.environ.get("DIALGUARD_CANCEL_ROUNDS", "40"))
BOUND_S = 10.0  # a cancelled dialer's shutdown closes sockets: far less than this
ENDED_IN: list[float] = []  # seconds from each cancel to the task's end (printed)


def awaiting(task: asyncio.Task) -> str:
    """Where the task waits: its chain of awaits, outermost first (file:line each)."""
    out, aw = [], task.get_coro()
    while aw is not None:
        f = getattr(aw, "cr_frame", None) or getattr(aw, "gi_frame", None)
        if f is None:
            out.append(type(aw).__name__)
            break
        out.append(f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno}")
        aw = getattr(aw, "cr_await", None) or getattr(aw, "gi_yieldfrom", None)
    return " > ".join(out)


async def cancel_once(task: asyncio.Task, rng: random.Random) -> str | None:
    """Lands one cancel after a random number of event-loop iterations or a random
    time; None if the task ended with CancelledError within BOUND_S, else what went wrong."""
    if rng.random() < 0.5:
        for _ in range(rng.randrange(0, 400)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.3))
    if task.done():
        return f"ended before the cancel: {task!r}"
    where = awaiting(task)
    t0 = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=BOUND_S)
    ENDED_IN.append(time.monotonic() - t0)
    if not done:
        return f"cancel lost (cancelling={task.cancelling()}), landed at {where}"
    if not task.cancelled():
        return f"ended without CancelledError: {task.exception()!r}, landed at {where}"
    return None


def swallowed(caplog) -> int:
    """Cancels an awaited call swallowed and dialguard/cancel.py honoured (its log lines)."""
    return sum(1 for r in caplog.records if r.name == "dialguard.cancel" and "honoured" in r.getMessage())


async def test_a_held_dialer_cancelled_once_ends(rig, caplog):
    """The kill-switch case of the CI hang: a dialer holding a paused campaign back ticks
    (Redis, PostgreSQL, its ARI events socket) and is cancelled anywhere in that."""
    camp = await rig.campaign([number("00")])
    await rig.engine.pause("campaign", camp, why="test")
    caplog.set_level("INFO", logger="dialguard.cancel")
    rng = random.Random(int(os.environ.get("DIALGUARD_CANCEL_SEED", "0")) or None)
    lost = []
    for _ in range(ROUNDS):
        d = rig.start(camp, ["agent1"])
        _, task = rig.dialers[-1]
        deadline = time.monotonic() + 10
        while not (d._started and d.ari.healthy and m.HELD_BACK.labels(camp)._value.get() == 1):
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.01)
        problem = await cancel_once(task, rng)
        rig.dialers.pop()
        if problem:
            lost.append(problem)
            d.stop()  # not to leave it running
            await asyncio.wait([task], timeout=BOUND_S)
        assert d.locks.conn is None and d.ari._closed  # its lock session and socket closed
        m.HELD_BACK.labels(camp).set(0)
    print(f"{len(lost)} of {ROUNDS} cancels lost or late; {swallowed(caplog)} swallowed on the way, honoured"
          f" (ari_app of {ari_app.__path__[0]}); ended within {max(ENDED_IN, default=0):.2f}s of a cancel")
    ENDED_IN.clear()
    assert not lost, "\n".join(lost)


async def test_a_dialing_dialer_cancelled_once_ends(rig, caplog):
    """Cancelled while it places calls (decisions, originates, ringing calls): the
    task ends; the next dialer adopts what it left."""
    numbers = [number("99") for _ in range(ROUNDS * 2)]  # never answered: they ring
    camp = await rig.campaign(numbers, ring_timeout_s=2, calls_per_second=20)
    caplog.set_level("INFO", logger="dialguard.cancel")
    rng = random.Random(int(os.environ.get("DIALGUARD_CANCEL_SEED", "0")) or None)
    lost, placing = [], 0
    for _ in range(ROUNDS):
        d = rig.start(camp, ["agent1", "agent2", "agent3", "agent4"])
        _, task = rig.dialers[-1]
        deadline = time.monotonic() + 10
        while not (d._started and d.ari.healthy):
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 3  # and placing a call (decision, originate), if one is due
        while not d.life.placing and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        placing += bool(d.life.placing)
        problem = await cancel_once(task, rng)
        rig.dialers.pop()
        if problem:
            lost.append(problem)
            d.stop()
            await asyncio.wait([task], timeout=BOUND_S)
        assert d.locks.conn is None and d.ari._closed  # its lock session and socket closed
    calls = await rig.calls(camp)
    assert calls  # cancelled while placing calls, not only before
    print(f"{len(calls)} calls placed, {placing} dialers cancelled around a placing;", end=" ")
    print(f"{len(lost)} of {ROUNDS} cancels lost or late; {swallowed(caplog)} swallowed on the way, honoured"
          f" (ari_app of {ari_app.__path__[0]}); ended within {max(ENDED_IN, default=0):.2f}s of a cancel")
    ENDED_IN.clear()
    assert not lost, "\n".join(lost)


async def test_a_starting_dialer_cancelled_once_releases_its_locks(rig):
    """Cancelled while it starts (takes the app's and its campaigns' locks, adopts): it
    ends, and its PostgreSQL session is closed, so the campaign is free for the next
    dialer (not held until the garbage collector closes the connection)."""
    from dialguard.campaigns.store import CampaignLocks

    camp = await rig.campaign([number("00")])
    await rig.engine.pause("campaign", camp, why="test")  # nothing dialed meanwhile
    rng = random.Random(int(os.environ.get("DIALGUARD_CANCEL_SEED", "0")) or None)
    other = CampaignLocks(rig.store.pool.conninfo)
    try:
        for _ in range(ROUNDS):
            d = rig.start(camp, ["agent1"])
            _, task = rig.dialers.pop()
            await asyncio.sleep(rng.uniform(0, 0.15))  # anywhere in its start (~0.1 s here)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=BOUND_S)
            assert done, f"cancel lost: {awaiting(task)}"
            assert d.locks.conn is None  # its lock session closed: the locks it took are free
            deadline = time.monotonic() + BOUND_S  # the server ends the session after its Terminate
            while not await other.acquire(camp):
                assert time.monotonic() < deadline, "the campaign is still locked by the cancelled dialer"
                await asyncio.sleep(0.01)
            await other.release(camp)
    finally:
        await other.close()
