"""Test helpers for the dialer (tests/integration/test_campaign_*, tests/e2e/test_dialer_*)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parents[2]


def ensure_schema(dsn: str) -> None:
    """Make the dialer tables exist: `dialguard db migrate` (the project's migration
    runner) when the CLI has it; until it lands, apply sql/050+ directly (they are
    idempotent, CREATE ... IF NOT EXISTS, so the runner applies them cleanly later)."""
    has_runner = subprocess.run([sys.executable, "-m", "dialguard.cli", "db", "migrate", "--help"],
                                capture_output=True, timeout=60).returncode == 0
    if has_runner:
        env = dict(os.environ)
        if not env.get("DIALGUARD_PG_ADMIN_DSN"):
            # the dev stack's cluster: superuser postgres, trust auth on loopback
            info = conninfo_to_dict(dsn)
            info["user"] = "postgres"
            env["DIALGUARD_PG_ADMIN_DSN"] = make_conninfo(**info)
        out = subprocess.run([sys.executable, "-m", "dialguard.cli", "db", "migrate"], capture_output=True,
                             text=True, timeout=120, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"dialguard db migrate failed: {out.stderr or out.stdout}")
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        for f in sorted((REPO_ROOT / "sql").glob("0[5-9][0-9]_*.sql")):
            conn.execute(f.read_text())
