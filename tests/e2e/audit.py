"""The dev stack's audit trail (PostgreSQL, filled by its shipper), read by the
e2e tests of the PBX recipes and the load test to check what the guard decided."""

from __future__ import annotations

import time

import psycopg


def decisions(pg_dsn: str, campaign: str, expect: int = 0, timeout: float = 15.0) -> list[dict]:
    """audit_decisions rows of `campaign`, in decision order; waits (shipper
    delay) until at least `expect` are there."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(pg_dsn, connect_timeout=5) as conn:
            cur = conn.execute(
                "select decision_id, allowed, reasons, campaign, agent, call_id "
                "from audit_decisions where campaign = %s order by recorded_at, decision_id", (campaign,))
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, row)) for row in cur.fetchall()]
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def outcomes(pg_dsn: str, decision_id: str, timeout: float = 15.0) -> list[str]:
    """The results reported for one decision (audit_outcomes), once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(pg_dsn, connect_timeout=5) as conn:
            rows = [r[0] for r in conn.execute(
                "select result from audit_outcomes where decision_id = %s", (decision_id,)).fetchall()]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
