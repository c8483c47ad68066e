"""dialguard/pg_cancel.py: psycopg_pool's timed waits lose a cancel on Python 3.11 (under
asyncio.wait_for, CPython gh-86296); ours do not; the pools dialguard makes use ours;
an upgrade of psycopg_pool that changes what we replace is noticed."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import sys

import pytest
from psycopg_pool import _acompat

from dialguard import pg_cancel

# the source of what install() replaces, as psycopg_pool 3.3.3 ships it
STOCK_SHA256 = "d259531f"  # first 8 hex digits of their source; see the last test


async def lost_cancels(method, landings: int = 10, rounds: int = 20) -> tuple[int, int]:
    """(cancels lost, cancels landed): a task waits on an ACondition with `method` as its
    wait_timeout, as psycopg_pool's WaitingClient does for a free connection; the
    connection comes (notify) and the waiting task is cancelled 0..landings-1 event-loop
    iterations later. A cancel landed on a pending task must end it cancelled."""
    lost = landed = 0
    for k in range(landings):
        for _ in range(rounds):
            cond = _acompat.ACondition()

            async def waiter():
                async with cond:
                    return await method(cond, 5.0)

            t = asyncio.create_task(waiter())
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # waiting now
            async with cond:
                cond.notify_all()
            for _ in range(k):
                await asyncio.sleep(0)
            if not t.cancel():
                continue
            landed += 1
            await asyncio.wait([t])
            if not t.cancelled():
                lost += 1
                assert t.result() is True  # it went on as if never cancelled
    return lost, landed


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps a cancel from 3.12 (gh-96764)")
async def test_psycopg_pools_wait_loses_a_cancel_landing_as_it_is_woken():
    lost, landed = await lost_cancels(pg_cancel.STOCK[_acompat.ACondition])
    assert landed > 50 and lost > 0, (lost, landed)


async def test_ours_keeps_every_cancel():
    lost, landed = await lost_cancels(pg_cancel.wait_timeout)
    # (ours needs no task of its own: woken, it ends sooner, so fewer cancels land)
    assert landed >= 20 and lost == 0, (lost, landed)


async def test_ours_times_out_as_theirs_did():
    cond, ev = _acompat.ACondition(), _acompat.AEvent()
    async with cond:
        assert await pg_cancel.wait_timeout(cond, 0.01) is False
    assert await pg_cancel.wait_timeout(ev, 0.01) is False
    ev.set()
    assert await pg_cancel.wait_timeout(ev, 0.01) is True


def test_install_patches_both_classes_and_the_pools_call_it():
    pg_cancel.install()
    for cls in pg_cancel.PATCHED:
        assert cls.wait_timeout is pg_cancel.wait_timeout
    import dialguard.campaigns.store as cstore
    import dialguard.web.app as wapp
    for mod in (cstore, wapp):
        src = inspect.getsource(mod)
        assert src.count("AsyncConnectionPool(") == src.count("pg_cancel.install()"), mod.__name__


def test_the_replaced_methods_are_the_ones_we_know():
    """psycopg_pool upgraded and its wait_timeout changed (or gone): look at dialguard/pg_cancel.py
    again, then put the new digest here."""
    parts = [inspect.getsource(pg_cancel.STOCK[cls]) for cls in pg_cancel.PATCHED]
    assert all("asyncio.wait_for(self.wait(), timeout)" in p for p in parts), parts
    digest = hashlib.sha256("".join(parts).encode()).hexdigest()[:8]
    assert digest == STOCK_SHA256, digest
