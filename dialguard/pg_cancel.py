"""psycopg_pool's timed waits, made to keep a cancel on Python 3.11.

psycopg_pool 3.3 waits for a free connection (`AsyncConnectionPool.getconn` when every
connection is busy: its WaitingClient's `ACondition.wait_timeout`), for the pool to
fill (`AEvent.wait_timeout`) and in its scheduler under `asyncio.wait_for`, which on
3.11 loses a cancel landing as the wait completes (CPython gh-86296; dialguard/cancel.py).
A dialer cancelled there went on as if never cancelled: the handler of an answered call
ran past its dialer's close (CI, 2026-12-06). psycopg_pool has no hook for its waiting
classes, so `install()` gives both classes a `wait_timeout` under `asyncio.timeout`,
which counts the cancels asked (gh-102780). Same result, same TimeoutError -> False.
tests/unit/test_pg_cancel.py pins the methods replaced: an upgrade that changes them
fails there, to be looked at again (3.12's wait_for keeps a cancel: no need then).
"""

from __future__ import annotations

from psycopg_pool import _acompat

from dialguard import cancel

PATCHED = (_acompat.AEvent, _acompat.ACondition)
# psycopg_pool's own methods, as imported (for the tests that pin them)
STOCK = {cls: cls.__dict__["wait_timeout"] for cls in PATCHED}


async def wait_timeout(self, timeout: float) -> bool:
    """psycopg_pool's `wait_timeout`: whether woken within `timeout` seconds."""
    try:
        await cancel.within(timeout, self.wait())
        return True
    except TimeoutError:
        return False


def install() -> None:
    """Idempotent; called by every module that makes an asyncio pool, before it does."""
    for cls in PATCHED:
        cls.wait_timeout = wait_timeout
