"""libfaketime's per-pid semaphores of dead processes are removed before a test
cluster's postgres-user command runs (a stale root-owned one with the same pid
stops it from starting under `make test-dates`)."""

from __future__ import annotations

import os
from pathlib import Path

from fakes.pg import clear_stale_faketime


def test_stale_pairs_go_live_ones_stay():
    dead = 4_194_000  # above any pid_max in use here
    while True:
        try:
            os.kill(dead, 0)
            dead -= 1
        except ProcessLookupError:
            break
    stale = [Path(f"/dev/shm/sem.faketime_sem_{dead}"), Path(f"/dev/shm/faketime_shm_{dead}")]
    live = [Path(f"/dev/shm/sem.faketime_sem_{os.getpid()}"), Path(f"/dev/shm/faketime_shm_{os.getpid()}")]
    mine = [p for p in live if not p.exists()]  # this process's own pair, if libfaketime made one, is kept as is
    try:
        for p in stale + mine:
            p.write_bytes(b"x")
        clear_stale_faketime()
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in live if p in mine)
    finally:
        for p in stale + mine:
            p.unlink(missing_ok=True)
