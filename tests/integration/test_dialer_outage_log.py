"""The dialer while PostgreSQL is down (issue 13: a traceback about once a
second, 2,548 lines in two outages): the outage is logged once when it
starts, then a line per period with a count, and once when it ends.

Real PostgreSQL (a cluster of the module's own, stopped and started again)
and the stack's Redis; the dialer's pacing loop runs as in production (its ARI
side is not started: nothing is dialed)."""

from __future__ import annotations

import asyncio
import logging

from ari_app.dialer import Dialer, DialerConfig
from dialguard.campaigns.store import Store


async def wait_for(pred, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_postgresql_outage_logged_once_then_per_period(make_engine, cluster, audit_db, caplog):
    engine = await make_engine("cn-default")
    store = await Store.open(audit_db, max_size=2)
    cfg = DialerConfig(ari_url="http://127.0.0.1:9", ari_user="u", ari_password="p", agents={"a1": "PJSIP/a1"},
                       outage_log_s=2.0)
    d = Dialer(cfg, engine, store)
    caplog.set_level(logging.INFO, "ari_app.dialer")
    loop = asyncio.create_task(d._pace_loop())
    try:
        await asyncio.sleep(1.0)  # running with PostgreSQL up: no outage line
        assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
        await asyncio.to_thread(cluster.stop, "immediate")
        failures = lambda: d.outages["PostgreSQL"].total  # noqa: E731
        await wait_for(lambda: failures() >= 6, 60, "6 failed rounds of the pacing loop")
        assert d.outages["PostgreSQL"].down
        await asyncio.to_thread(cluster.start)
        await wait_for(lambda: not d.outages["PostgreSQL"].down, 60, "the end of the outage to be seen")
    finally:
        d.stop()
        await asyncio.wait_for(loop, 10)
        await store.close()
        if d.locks.conn is not None:
            await d.locks.conn.close()
    mine = [r for r in caplog.records if r.name == "ari_app.dialer"]
    msgs = [r.getMessage() for r in mine]
    started = [m for m in msgs if m.startswith("PostgreSQL unavailable")]
    periodic = [m for m in msgs if m.startswith("PostgreSQL still unavailable")]
    ended = [m for m in msgs if m.startswith("PostgreSQL back after")]
    assert len(started) == 1 and len(ended) == 1, msgs
    # at most one line per 2 s period, each with the count of failures since the previous line
    assert 1 <= len(periodic) < 6, msgs
    assert all(" failures in the last " in m for m in periodic)
    assert all(r.exc_info is None for r in mine), "no traceback for a store outage"
    assert len(mine) <= 2 + len(periodic) + 2, msgs  # nothing else logged per failed round
