"""dialguard/cancel.py: a cancel swallowed on its way is honoured; waiting on an event
never loses a cancel (asyncio.wait_for on Python 3.11 can: CPython gh-86296)."""

from __future__ import annotations

import asyncio

import pytest

from dialguard import cancel


async def swallowing_then(after):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass  # swallowed, as a library can
    return await after()


async def started(coro) -> asyncio.Task:
    t = asyncio.ensure_future(coro)
    await asyncio.sleep(0)  # running, suspended in its sleep
    return t


async def test_check_raises_once_a_cancel_was_swallowed():
    async def after():
        cancel.check()
        return "went on"

    t = await started(swallowing_then(after))
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t


async def test_check_lets_a_task_never_cancelled_go_on():
    async def body():
        cancel.check()
        return "went on"

    assert await body() == "went on"


async def test_wait_event_raises_after_a_swallowed_cancel():
    stop = asyncio.Event()
    t = await started(swallowing_then(lambda: cancel.wait_event(stop, 0.01)))
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t


async def test_wait_event_cancelled_as_the_event_is_set_raises():
    """The iteration in which the event is set and the cancel lands: wait_for(ev.wait(), t)
    would return True (its inner task completes first); wait_event raises."""
    stop = asyncio.Event()
    t = await started(cancel.wait_event(stop, 5))
    stop.set()
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t


async def test_wait_event_says_whether_the_event_was_set():
    stop = asyncio.Event()
    assert await cancel.wait_event(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await cancel.wait_event(stop, 5) is True
    assert await cancel.wait_event(stop, 0) is True

