"""Test helpers for the audit: a throwaway PostgreSQL cluster of the test's own
(so a test may stop and start it), and a shipper subprocess (so a test may
kill -9 it). Used by tests/integration/test_audit_*.py."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    env = os.environ.get("DIALGUARD_PG_BIN")
    if env:
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql (make setup installs them)")
    return found[-1]


def clear_stale_faketime() -> None:
    """Remove libfaketime's per-pid semaphores and segments of processes that no
    longer run (scripts/lib.sh faketime_clear_stale says why): under `make
    test-dates` a postgres-user process whose pid matches a stale root-owned pair
    cannot start."""
    for f in [*Path("/dev/shm").glob("sem.faketime_sem_*"), *Path("/dev/shm").glob("faketime_shm_*")]:
        pid = f.name.rsplit("_", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


_pristine: "PgCluster | None" = None  # the initdb every cluster of this process is a copy of


class PgCluster:
    """initdb + pg_ctl in a temporary folder; as the postgres OS user when root."""

    def __init__(self, port: int | None = None):
        self.bin = pg_bin()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dg-audit-pg-"))
        # `make down` stops clusters an interrupted test run left (scripts/stack-down.sh)
        registry = os.environ.get("DIALGUARD_TEST_REGISTRY")
        if registry:
            with open(registry, "a", encoding="utf-8") as f:
                f.write(f"{self.dir}\n")
        self.data = self.dir / "data"
        self.log = self.dir / "postgresql.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        if "faketime" in os.environ.get("LD_PRELOAD", ""):
            clear_stale_faketime()
        out = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {out.stderr.strip() or out.stdout.strip()}\n"
                               f"log: {self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def init(self) -> "PgCluster":
        """A fresh cluster: a copy of one initdb made once per test process (initdb
        takes about 2 s, and each test module that uses a cluster made its own)."""
        global _pristine
        if _pristine is None or not _pristine.data.is_dir():
            first = PgCluster(self.port)
            first._run(str(first.bin / "initdb"), "-D", str(first.data), "-U", "postgres", "--auth=trust",
                       "-E", "UTF8", "--no-locale")
            atexit.register(first.destroy)
            _pristine = first
        # cp -a keeps the owner (postgres) and modes initdb gave the data folder
        subprocess.run(["cp", "-a", str(_pristine.data), str(self.data)], check=True, timeout=120)
        return self

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                        "-c fsync=off -c max_connections=100")

    def stop(self, mode: str = "fast") -> None:
        """mode immediate: the server processes die at once (a crash, WAL replay on start)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "stop", "-m", mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, db: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def sql(self, query: str, db: str = "postgres", user: str = "postgres"):
        with psycopg.connect(self.dsn(db, user), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def create_db(self, name: str, owner: str | None = None) -> str:
        self.sql(f'create database "{name}"' + (f' owner "{owner}"' if owner else ""))
        return name

    def create_login(self, name: str) -> None:
        if not self.sql(f"select 1 from pg_roles where rolname = '{name}'"):
            self.sql(f'create role "{name}" login')

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class ShipperProcess:
    """`dialguard audit-ship` as a child process with its own environment."""

    def __init__(self, env: dict[str, str], *args: str, log: Path):
        self.env = env
        self.args = args
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> "ShipperProcess":
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "dialguard.cli", "audit-ship", *self.args],
                                     env={**os.environ, **self.env, **(extra_env or {})},
                                     stdout=self._fh, stderr=subprocess.STDOUT)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        rc = self.proc.returncode if self.proc else None
        if getattr(self, "_fh", None):
            self._fh.close()
        return rc

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def wait_until(pred, timeout: float, step: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
