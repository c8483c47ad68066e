"""Local spool: decisions the audit stream never saw.

When Redis is unreachable or too slow, or decide.lua refuses at the audit
backlog ceiling, the engine denies with `guard_unavailable` and nothing reaches
the stream. The engine then calls `Spool.append(fields)` with the fields a
decision stream entry would have had; `dialguard audit-ship` moves the spool
into PostgreSQL (Shipper.ship_spool), so these denials are on record too.

Files (in DIALGUARD_SPOOL_DIR, one host's spool; <P> is the key prefix,
%-quoted, so a shipper ships the spool of the installation whose stream it
ships):
- `decisions.<P>.<pid>.jsonl`: the active file of one writing process (one JSON
  object per line, appended with O_APPEND, one write() per record: no fsync,
  nothing buffered in the process);
- `decisions.<P>.<pid>.<ns>.shipping`: a file the shipper took (renamed, so the
  writer starts a new one); deleted only after its rows were committed. A
  shipper killed before that ships it again: rows are idempotent by decision id.

Writer and shipper meet on flock(2): the writer holds an exclusive lock on its
file while it checks that the file is still the active one (same inode at the
active name) and writes; the shipper renames first, then takes the lock before
reading. A write is therefore either in the file the shipper reads, or in a
new active file: never in a file already shipped and deleted.

Bounded: beyond `max_bytes` in the whole directory (DIALGUARD_SPOOL_MAX_MB,
default 256 MB, about 400,000 records) a record is dropped: counted
(`Spool.dropped`), logged at CRITICAL (the first one, then a summary every
10 s), and once there is room again a `t=admin` record
`audit_spool_dropped` (how many, first and last time) is spooled, so the audit
itself says that records are missing. The deny stands either way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("dialguard.audit.spool")

ACTIVE_GLOB = "decisions.{p}.*.jsonl"
SHIPPING_GLOB = "decisions.{p}.*.shipping"
DISABLED = {"", "off", "none", "0", "false", "no"}
OTHERS_REFRESH_S = 1.0  # how stale the writer's view of the other files' sizes may be
DROP_LOG_EVERY_S = 10.0


def _ms() -> int:
    return int(time.time() * 1000)


def file_prefix(key_prefix: str) -> str:
    """The key prefix as a file-name part: no '/', no '.' (the name separator)."""
    return quote(key_prefix, safe="").replace(".", "%2E")


class Spool:
    """Append-only local spool of one process (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = 256 * 1024 * 1024, node: str = "",
                 prefix: str = "dg"):
        self.dir = Path(directory)
        self.prefix = prefix
        self._fp = file_prefix(prefix)
        self.max_bytes = max_bytes
        self.node = node
        self.dropped = 0          # records lost since the process started
        self.appended = 0
        self._fd: int | None = None
        self._fd_pid = 0
        self._lock = threading.Lock()
        self._others = 0          # bytes in the other files of the directory
        self._others_at = -1e9
        self._unreported = 0      # drops not yet spooled as an audit_spool_dropped record
        self._drop_first = self._drop_last = 0
        self._next_drop_log = 0.0
        self._dir_ok = False

    @classmethod
    def from_settings(cls, settings, prefix: str | None = None) -> "Spool | None":
        """The spool of DIALGUARD_SPOOL_DIR for key prefix `prefix` (default
        DIALGUARD_KEY_PREFIX); None when disabled ('' or 'off').
        A directory that cannot be created is logged at once (not when it is
        needed) and tried again at each append."""
        raw = (settings.spool_dir or "").strip()
        if raw.lower() in DISABLED:
            return None
        sp = cls(raw, max_bytes=int(settings.spool_max_mb * 1024 * 1024), node=settings.node,
                 prefix=prefix or settings.key_prefix)
        try:
            sp._ensure_dir()
        except OSError as exc:
            log.error("audit spool %s unusable (%s): decisions denied while Redis is unreachable would "
                      "not be recorded", raw, exc)
        return sp

    @property
    def path(self) -> Path:
        return self.dir / f"decisions.{self._fp}.{os.getpid()}.jsonl"

    def _ensure_dir(self) -> None:
        if not self._dir_ok:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir_ok = True

    # -- writer ---------------------------------------------------------------------------
    def append(self, fields: dict) -> bool:
        """Spool one record (the fields of a stream entry). True if written;
        False if dropped (spool full or unwritable: counted and logged)."""
        data = (json.dumps(fields, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                self._ensure_dir()
                if self._unreported:  # room again: first say in the audit what was lost
                    dr = self._drop_record()
                    if not self._full(len(dr) + len(data)):
                        self._write(dr)
                        self._unreported = 0
                if self._unreported or self._full(len(data)):
                    self._drop(f"spool full ({self.max_bytes} bytes)")
                    return False
                self._write(data)
                self.appended += 1
                return True
            except OSError as exc:
                self._close()
                self._drop(f"spool unwritable: {exc}")
                return False

    def _full(self, extra: int) -> bool:
        now = time.monotonic()
        if now - self._others_at >= OTHERS_REFRESH_S:
            own = self.path.name
            total = 0
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name != own and e.name.startswith("decisions."):
                        try:
                            total += e.stat().st_size
                        except FileNotFoundError:
                            pass  # shipped meanwhile
            self._others, self._others_at = total, now
        try:  # by name: the fd may still point to a file the shipper took
            own_size = os.stat(self.path).st_size
        except FileNotFoundError:
            own_size = 0
        return self._others + own_size + extra > self.max_bytes

    def _open(self) -> int:
        if self._fd is not None and self._fd_pid != os.getpid():  # forked: the parent's file is not ours
            self._fd = None
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def _close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def _write(self, data: bytes) -> None:
        for _ in range(5):
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the shipper renamed it: start a new active file
                    self._close()
                    continue
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                return
            finally:
                if self._fd == fd:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        raise OSError("the active spool file keeps being renamed")

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self._unreported += 1
        now_ms = _ms()
        self._drop_first = self._drop_first if self._unreported > 1 else now_ms
        self._drop_last = now_ms
        now = time.monotonic()
        if self.dropped == 1 or now >= self._next_drop_log:
            log.critical("audit spool %s: %s; a guard_unavailable decision was NOT recorded "
                         "(%d dropped so far; the deny stands)", self.dir, why, self.dropped)
            self._next_drop_log = now + DROP_LOG_EVERY_S

    def _drop_record(self) -> bytes:
        j = {"action": "audit_spool_dropped", "actor": "dialguard", "target": str(self.dir),
             "why": f"audit spool full or unwritable: {self._unreported} guard_unavailable decisions not recorded",
             "at": self._drop_last, "first_at": self._drop_first, "dropped": self._unreported,
             "node": self.node}
        rec = {"t": "admin", "id": f"{_ms():012x}{os.urandom(8).hex()}", "j": json.dumps(j, separators=(",", ":"))}
        return (json.dumps(rec, separators=(",", ":")) + "\n").encode()

    def close(self) -> None:
        with self._lock:
            self._close()


# -- shipper side (Shipper.ship_spool) ------------------------------------------------------
class ShipLock:
    """One shipper at a time per spool directory and key prefix (non-blocking flock)."""

    def __init__(self, directory: Path, prefix: str = "dg"):
        self.path = Path(directory) / f".ship.{file_prefix(prefix)}.lock"
        self.fd: int | None = None

    def __enter__(self) -> bool:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except (BlockingIOError, FileNotFoundError):
            return False

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def rotate(directory: Path, prefix: str = "dg") -> list[Path]:
    """Rename every non-empty active file of the prefix to a .shipping name (its
    writer starts a new one at its next record); return every .shipping file of
    the prefix, oldest first (including those a killed shipper left)."""
    directory, fp = Path(directory), file_prefix(prefix)
    for p in directory.glob(ACTIVE_GLOB.format(p=fp)):
        try:
            if p.stat().st_size == 0:
                continue
            pid = p.name.split(".")[2]
            p.rename(directory / f"decisions.{fp}.{pid}.{time.time_ns()}.shipping")
        except FileNotFoundError:
            continue

    def age(p: Path):
        ns = p.name.split(".")[3]
        return int(ns) if ns.isdigit() else 0, p.name

    return sorted(directory.glob(SHIPPING_GLOB.format(p=fp)), key=age)


def read_locked(path: Path) -> bytes:
    """The file's content once no writer is in the middle of a record: a writer
    that opened it before the rename holds the lock until its line is written."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def spool_stream_id(fields: dict, line: bytes = b"") -> str:
    """Synthetic stream id of a spooled record: "<ms>-<seq>". ms is the
    payload's ts (wall clock at the request's start), else its at; recorded_at
    is that time. seq is 2**48 plus 48 bits of the line's hash: one per line
    (two denies of one millisecond differ, since each line holds its own
    decision id), the same when a file is shipped again, and never a real
    stream entry's sequence (those count from 0 within one millisecond)."""
    j = json.loads(fields["j"])
    if not isinstance(j, dict):
        raise ValueError("payload is not a JSON object")
    ms = j.get("ts") if j.get("ts") not in (None, "") else j.get("at")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
        raise ValueError("payload has no time (ts or at)")
    seq = _SEQ_BASE | int.from_bytes(hashlib.blake2b(line, digest_size=6).digest(), "big")
    return f"{int(ms)}-{seq}"


_SEQ_BASE = 1 << 48


def parse(name: str, data: bytes) -> tuple[list[tuple[str, dict]], list[tuple[str, dict, str]]]:
    """Lines -> (stream-like entries, garbage). Garbage (not JSON, not an
    object of strings, no time, a torn last line) comes back as
    (reject stream id "spool:<file>:<line>", fields kept raw, error)."""
    entries: list[tuple[str, dict]] = []
    bad: list[tuple[str, dict, str]] = []
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # no newline at the end: the write did not finish
    if not torn:
        lines.pop()
    for i, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace")
        where = f"spool:{name}:{i}"
        if torn and i == len(lines):
            bad.append((where, {"raw": text}, "torn last line (no newline)"))
            continue
        if not raw.strip():
            continue
        try:
            f = json.loads(text)
            if not isinstance(f, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in f.items()):
                raise ValueError("not an object of strings")
            sid = spool_stream_id(f, raw)
        except (ValueError, KeyError, TypeError) as exc:
            bad.append((where, {"raw": text}, f"{type(exc).__name__}: {exc}"))
            continue
        entries.append((sid, f))
    return entries, bad


def pending(directory: Path | None, prefix: str | None = None) -> int:
    """Spool files waiting to be shipped (non-empty active files and .shipping
    files), of one key prefix or (None) of all."""
    if directory is None or not Path(directory).is_dir():
        return 0
    n = 0
    fp = "*" if prefix is None else file_prefix(prefix)
    for p in list(Path(directory).glob(ACTIVE_GLOB.format(p=fp))) + \
            list(Path(directory).glob(SHIPPING_GLOB.format(p=fp))):
        try:
            n += p.stat().st_size > 0 or p.name.endswith(".shipping")
        except FileNotFoundError:
            pass
    return n


def spool_dir(settings) -> Path | None:
    raw = (settings.spool_dir or "").strip()
    return None if raw.lower() in DISABLED else Path(raw)
