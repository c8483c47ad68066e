"""A cancel asked of a task that a library swallowed is honoured at the task's next step.

On Python 3.11, asyncio.wait_for(aw, timeout) wraps `aw` in a task of its own; a cancel
that lands in the event-loop iteration in which that inner task completes is lost:
wait_for catches the CancelledError, sees the inner task done and returns its result
(CPython gh-86296; fixed in 3.12 by gh-96764, not backported). redis-py's asyncio
connection wrote every command under wait_for when it has a socket timeout
(redis/asyncio/connection.py, send_packed_command), so a dialer cancelled while it sent
a Redis command went on ticking, never to end (the CI hang of 2026-12-05; in
tests/e2e/test_dialer_cancel.py 3 of 150 cancels of a dialer holding a campaign back).
That one is fixed where it happens: every redis-py asyncio client dialguard builds
writes under asyncio.timeout (dialguard/redis_cancel.py), and psycopg_pool's timed waits
(a free connection, a pool filling, its scheduler) run under asyncio.timeout too
(dialguard/pg_cancel.py; all 60 cancels landing as a waiter was woken were lost before).
What still waits under wait_for: psycopg_pool's gather at a pool's close and psycopg's
COPY worker; so the dialer keeps its checks (an attribute read each) as a last guard.

A swallowed cancel leaves its mark: the task's cancelling() count stays above zero
(only uncancel(), called by asyncio.timeout and TaskGroup when they consume their own
cancel, brings it down). The dialer's pacing loop looks at it at each step and before
it claims leads (`check`), and waits between steps with `wait_event`, which cannot
lose a cancel (asyncio.timeout counts the cancels asked, gh-102780) and checks too.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("dialguard.cancel")


def check() -> None:
    """Raise CancelledError if the current task was asked to stop and is still running:
    the cancel was swallowed on its way (see above). Never call it in cleanup code that
    runs after the task's CancelledError (a finally after a cancel: cancelling() is 1)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        log.info("task %s: a cancel swallowed by an awaited call, honoured now", task.get_name())
        raise asyncio.CancelledError("cancel requested earlier, swallowed by an awaited call")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Whether `event` was set within `timeout` seconds. Unlike asyncio.wait_for on 3.11,
    a cancel landing as the event is set raises CancelledError; so does a cancel of this
    task swallowed before (`check`)."""
    check()
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def within(timeout: float, aw):
    """`await aw` bounded by `timeout` seconds (TimeoutError past it), for the project's
    own code instead of asyncio.wait_for: a cancel that lands as `aw` completes raises
    CancelledError here, where wait_for on 3.11 would return aw's result (see above)."""
    async with asyncio.timeout(timeout):
        return await aw
