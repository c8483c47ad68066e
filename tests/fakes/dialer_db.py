"""Test helpers for the dialer (tests/integration/test_campaign_*, tests/e2e/test_dialer_*)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parents[2]


def ensure_schema(dsn: str) -> None:
    """Make the dialer tables exist: `dialguard db migrate` (the project's one migration
    runner, which applies every component's folder)."""
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
