"""The outage log policy (dialguard/outage.py): once when it starts, a line per
period with a count, once when it ends; never a traceback."""

from __future__ import annotations

import logging

import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError

from ari_app.dialer import store_kind
from dialguard.outage import OutageLog


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_one_line_at_start_one_a_minute_one_at_the_end(caplog):
    clock = Clock()
    o = OutageLog(logging.getLogger("t.outage"), "PostgreSQL", every_s=60, clock=clock)
    with caplog.at_level(logging.DEBUG, "t.outage"):
        o.ok()  # up and fine: nothing
        for _ in range(150):  # a failure a second for 150 s
            o.failed(psycopg.OperationalError("connection refused"))
            clock.t += 1
        o.ok()
        o.ok()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0] == ("ERROR", "PostgreSQL unavailable (OperationalError: connection refused); retrying, "
                                 "a line every 60s until it is back")
    assert lines[1] == ("WARNING", "PostgreSQL still unavailable after 60s: 60 failures in the last 60s "
                                   "(last: OperationalError: connection refused)")
    assert lines[2][1].startswith("PostgreSQL still unavailable after 120s: 60 failures in the last 60s")
    assert lines[3] == ("WARNING", "PostgreSQL back after 150s (150 failures)")
    assert all(r.exc_info is None for r in caplog.records)


def test_a_second_outage_is_logged_again(caplog):
    clock = Clock()
    o = OutageLog(logging.getLogger("t.outage2"), "Redis", every_s=60, clock=clock)
    with caplog.at_level(logging.DEBUG, "t.outage2"):
        o.failed("down")
        o.ok()
        clock.t += 5
        o.failed("down again")
        o.failed("down again")
        o.ok()
    msgs = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in msgs] == ["Redis unavailable", "Redis back after 0s", "Redis unavailable",
                                                "Redis back after 0s"]
    assert msgs[3].endswith("(2 failures)")


def test_store_kind():
    assert store_kind(psycopg.OperationalError("x")) == "PostgreSQL"
    assert store_kind(RedisConnectionError("x")) == "Redis"
    try:
        try:
            raise RedisConnectionError("inner")
        except RedisConnectionError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as outer:
        assert store_kind(outer) == "Redis"
    assert store_kind(KeyError("bug")) == "dialer"
