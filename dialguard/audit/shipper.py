"""`dialguard audit-ship`: the Redis audit stream -> PostgreSQL, exactly once.

The call path only ever appends to the stream (decide.lua, outcome.lua,
event.lua, in the same atomic step as the counters); this service moves the
entries to PostgreSQL off the call path:

1. read a batch through the consumer group `dialguard-audit` (first this
   consumer's own pending entries, left by a previous run; then stale entries of
   dead consumers, XAUTOCLAIM; then new ones, XREADGROUP >; a read that brought
   less than a batch waits up to LINGER_MS for more, so a trickle is shipped in a
   few transactions, not one per entry);
2. insert every row in ONE PostgreSQL transaction, ON CONFLICT DO NOTHING on
   the record's own id (decision id, outcome id, event id): a batch shipped twice
   (crash after COMMIT, before XACK) adds nothing the second time. Decisions and
   outcomes are COPYed into a temporary staging table and moved by one
   INSERT ... SELECT ... ON CONFLICT DO NOTHING per table (same rows, a fraction
   of the CPU of one INSERT per row);
3. only after COMMIT returned: XACK and XDEL the batch in one MULTI, so XLEN is
   exactly the backlog still to ship.

PostgreSQL down: the batch is kept and retried with backoff; decisions go on and
the stream grows (decide.lua denies with guard_unavailable beyond
DIALGUARD_AUDIT_BACKLOG_MAX rather than lose a record). The shipper killed at any
point: its entries stay pending and are shipped again by the next run (same
consumer name) or claimed by another shipper after --claim-idle-ms.

The local spool (dialguard/audit/spool.py: decisions denied with
guard_unavailable that the stream never saw) is shipped by the same process
every few seconds: rotate, insert through the same rows and INSERTs, delete a
file only after COMMIT.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from redis.exceptions import RedisError, ResponseError

from dialguard.audit import records
from dialguard.audit import spool as spool_files
from dialguard.audit.db import SchemaMissing, redact, require_schema
from dialguard import redisconn
from dialguard.config import Settings
from dialguard.crypto import Sealer
from dialguard.decision.keys import Keys
from dialguard.numbers import parse_number, short_hash

log = logging.getLogger("dialguard.audit.ship")

GROUP = "dialguard-audit"
# SQLSTATE classes that mean "this row can never be inserted" (a poison entry):
# data exceptions and integrity violations. Anything else (connection lost,
# missing table, privileges) is retried: it is the database, not the record.
POISON_CLASSES = ("22", "23")
PLAIN_NUMBER = re.compile(r"[0-9+()\-. ]{1,40}")
TABLES = ("decisions", "outcomes", "events", "overrides", "admin", "rules", "rejects")
# The newest migration whose columns the INSERTs below name.
SHIPPER_SCHEMA_VERSION = 80
SPOOL_CHUNK = 5000  # spooled records per transaction
# A read that returned less than a batch waits this long for more entries before
# shipping: every transaction, COMMIT (WAL flush), XACK+XDEL and pool check costs
# the same for 2 rows as for 200, so at a few hundred records/s small batches cost
# more CPU than the rows themselves (bench/audit.py). Bounds the audit's extra delay.
LINGER_MS = 500
# Tables whose rows are COPYed into a temporary staging table, then moved by one
# INSERT ... SELECT ... ON CONFLICT DO NOTHING per batch (bench/audit.py: a
# fraction of the CPU of one INSERT per row, in the shipper and in PostgreSQL).
# The rare tables keep one INSERT per row.
STAGED = {"decisions": ("audit_decisions", records.DECISION_COLS),
          "outcomes": ("audit_outcomes", records.OUTCOME_COLS)}
INSERT_MODES = ("copy", "rows")


def _insert_sql(table: str, cols: tuple[str, ...], json_cols: tuple[str, ...] = ()) -> str:
    vals = ", ".join("%s::jsonb" if c in json_cols else "%s" for c in cols)
    return f"insert into {table} ({', '.join(cols)}) values ({vals}) on conflict do nothing"


INSERTS = {
    "decisions": _insert_sql("audit_decisions", records.DECISION_COLS, ("counters", "request")),
    "outcomes": _insert_sql("audit_outcomes", records.OUTCOME_COLS, ("payload",)),
    "events": _insert_sql("audit_events", records.EVENT_COLS, ("payload",)),
    "overrides": _insert_sql("audit_overrides", records.OVERRIDE_COLS, ("payload",)),
    "admin": _insert_sql("audit_admin_actions", records.ADMIN_COLS, ("payload",)),
    "rules": _insert_sql("audit_rules_versions", records.RULES_COLS, ("files", "payload")),
    # a reject has no id of its own: kept once per (stream id, fields), so a batch
    # or spool file shipped twice does not keep it twice
    "rejects": "insert into audit_rejects (stream_id, fields, error) select %(s)s, %(f)s::jsonb, %(e)s "
               "where not exists (select 1 from audit_rejects where stream_id = %(s)s and fields = %(f)s::jsonb)",
}


def _stage_sql(name: str) -> tuple[str, str, str]:
    """(create the staging table, COPY into it, move its rows) for one table.
    The staging table has the target's column types and no constraint: a row
    PostgreSQL will not take fails in the INSERT ... SELECT, like a plain INSERT
    (a poison batch is then shipped entry by entry). ON COMMIT DELETE ROWS: a
    rolled back or committed batch leaves nothing behind."""
    table, cols = STAGED[name]
    stage = f"dg_stage_{name}"
    c = ", ".join(cols)
    return (f"create temp table if not exists {stage} on commit delete rows as "
            f"select {c} from {table} with no data",
            f"copy {stage} ({c}) from stdin",
            f"insert into {table} ({c}) select {c} from {stage} on conflict do nothing")


STAGE_SQL = {name: _stage_sql(name) for name in STAGED}


@dataclass
class Stats:
    shipped: int = 0          # stream entries acknowledged after a commit
    rows: int = 0             # rows offered to PostgreSQL (duplicates included)
    rejects: int = 0
    batches: int = 0
    pg_errors: int = 0
    redis_errors: int = 0
    spooled: int = 0          # spool records committed (spool files deleted after)
    spool_errors: int = 0
    started: float = field(default_factory=time.monotonic)


class Shipper:
    def __init__(self, settings: Settings | None = None, *, prefix: str | None = None, dsn: str | None = None,
                 consumer: str | None = None, batch: int = 500, block_ms: int = 1000,
                 claim_idle_ms: int = 60_000, claim_every_s: float = 5.0, spool_dir: str | None = None,
                 spool_every_s: float = 2.0, linger_ms: int = LINGER_MS, insert: str = "copy"):
        if insert not in INSERT_MODES:
            raise ValueError(f"insert is one of {', '.join(INSERT_MODES)}")
        self.settings = settings or Settings()
        self.keys = Keys(prefix or self.settings.key_prefix, self.settings.hash_secret)
        self.stream = self.keys.audit
        self.consumer = consumer or self.settings.node or socket.gethostname()
        self.batch_size = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        # entries wait unacknowledged while the read lingers: far below the idle time
        # after which another shipper would claim them (and ship them a second time)
        self.linger_ms = max(0, min(linger_ms, claim_idle_ms // 4))
        self.insert_mode = insert
        self._staged_conns: weakref.WeakSet = weakref.WeakSet()  # connections whose staging tables exist
        self.dsn = dsn or self.settings.pg_dsn
        self.redis = redisconn.sync_redis(self.settings, decode_responses=True, socket_timeout=10,
                                          socket_connect_timeout=3, health_check_interval=30)
        self.pool = ConnectionPool(
            self.dsn, min_size=1, max_size=1, open=False, name="audit-ship",
            # autocommit: every conn.transaction() block is a real transaction whose
            # COMMIT has returned when the block exits (never a savepoint)
            kwargs={"application_name": "dialguard-audit-ship", "connect_timeout": 3, "autocommit": True},
            check=ConnectionPool.check_connection,
            # give up a reconnection attempt after a while so that the backoff
            # starts again from 1 s: recovery is noticed within seconds
            reconnect_timeout=10.0)
        self.stats = Stats()
        self.stopping = threading.Event()
        self._own_pending = True
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._known_campaigns: set[str] = set()
        self._known_cids: set[str] = set()
        self._sealer: Sealer | None = None
        self._crash = _crash_point()
        self._pg_down_since: float | None = None
        self._next_pg_log = 0.0
        self._schema_ok = False
        self._next_pool_sync = 0.0
        sd = spool_files.spool_dir(self.settings) if spool_dir is None else \
            (None if spool_dir.strip().lower() in spool_files.DISABLED else Path(spool_dir))
        self.spool_dir = sd
        self.spool_every_s = spool_every_s
        self._next_spool = 0.0
        self._spool_commits = 0

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()
        self.redis.close()

    def stop(self, *_):
        self.stopping.set()

    # -- Redis side --------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def backlog(self) -> int:
        return int(self.redis.xlen(self.stream))

    def _read(self) -> list[tuple[str, dict | None]]:
        if self._own_pending:  # what a previous run of this consumer read but never acknowledged
            resp = self.redis.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=self.batch_size)
            entries = resp[0][1] if resp else []
            if entries:
                return entries
            self._own_pending = False
        now = time.monotonic()
        if now >= self._next_claim:
            nxt, entries, deleted = self._autoclaim()
            self._claim_cursor = nxt
            if nxt == "0-0":
                self._next_claim = now + self.claim_every_s
            if deleted:
                self._ack(list(deleted))
            if entries:
                log.info("claimed %d stale entries from dead consumers", len(entries))
                return entries
        resp = self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=self.batch_size,
                                     block=self.block_ms)
        entries = resp[0][1] if resp else []
        if entries and len(entries) < self.batch_size and self.linger_ms > 0:
            # a trickle: let a batch gather (one wait, one more read; not a read per entry)
            if not self.stopping.wait(self.linger_ms / 1000):
                resp = self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"},
                                             count=self.batch_size - len(entries))
                if resp:
                    entries = entries + resp[0][1]
        return entries

    def _autoclaim(self):
        r = self.redis.xautoclaim(self.stream, GROUP, self.consumer, min_idle_time=self.claim_idle_ms,
                                  start_id=self._claim_cursor, count=self.batch_size)
        nxt, entries = r[0], r[1]
        deleted = r[2] if len(r) > 2 else []
        return nxt, entries, deleted

    def _ack(self, ids: list[str]) -> None:
        """XACK + XDEL in one MULTI, retried until Redis takes it (or we stop:
        then the entries stay pending and are shipped again, harmlessly)."""
        delay = 0.2
        while True:
            try:
                with self.redis.pipeline(transaction=True) as pipe:
                    pipe.xack(self.stream, GROUP, *ids)
                    pipe.xdel(self.stream, *ids)
                    pipe.execute()
                return
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return  # the stream is gone (Redis lost its data): nothing left to acknowledge
                raise
            except RedisError as exc:
                self.stats.redis_errors += 1
                log.warning("acknowledging %d entries failed (%s); retrying", len(ids), exc)
                if self.stopping.wait(delay):
                    return
                delay = min(delay * 2, 5)

    # -- PostgreSQL side ------------------------------------------------------------------
    def _stage(self, conn: psycopg.Connection) -> None:
        """The staging tables of this connection (temporary: one set per session),
        created outside the batch's transaction, once per connection."""
        if self.insert_mode != "copy" or conn in self._staged_conns:
            return
        for create, _, _ in STAGE_SQL.values():
            conn.execute(create)
        self._staged_conns.add(conn)

    def _insert(self, conn: psycopg.Connection, b: records.Batch) -> None:
        staged = conn in self._staged_conns
        with conn.cursor() as cur:
            for name in TABLES:
                rows = getattr(b, name)
                if rows and staged and name in STAGE_SQL and len(rows) > 1:
                    _, copy_sql, move_sql = STAGE_SQL[name]
                    with cur.copy(copy_sql) as cp:
                        for row in rows:
                            cp.write_row(row)
                    cur.execute(move_sql)
                elif rows and name == "rejects":
                    cur.executemany(INSERTS[name], [{"s": r[0], "f": r[1], "e": r[2]} for r in rows])
                elif rows:
                    cur.executemany(INSERTS[name], rows)
            new_camps = [(n, t) for n, t in b.campaigns.items() if n not in self._known_campaigns]
            if new_camps:
                cur.executemany("insert into audit_campaigns (name, tag) values (%s, %s) on conflict do nothing",
                                new_camps)
            cids = self._caller_ids(b)
            if cids:
                cur.executemany("insert into audit_caller_ids (tag, number_enc) values (%s, %s) "
                                "on conflict do nothing", cids)
        self.stats.rows += (len(b.decisions) + len(b.outcomes) + len(b.events) + len(b.overrides) + len(b.admin)
                            + len(b.rules))

    def _sealer_(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer()
        return self._sealer

    def seal_requested_caller_ids(self, b: records.Batch) -> None:
        """Numbers at rest are sealed: the caller ID a request named (the engine
        sends it as given) is stored AES-GCM-sealed, in its column and in the
        stored record. A value that is already sealed is kept as is."""
        plain_of: dict[str, str] = {}
        for i, row in enumerate(b.decisions):
            req = row[13]
            if not req:
                continue
            if PLAIN_NUMBER.fullmatch(req):
                token = self._sealer_().seal(req)
                j = json.loads(row[21])
                j["cid_req"] = token
                row = (*row[:13], token, *row[14:21], json.dumps(j, separators=(",", ":")), *row[22:])
                b.decisions[i] = row
                plain_of[token] = req
            else:
                try:
                    plain_of[req] = self._sealer_().open(req)
                except Exception:  # noqa: BLE001 - sealed with another key: keep it, name nothing
                    pass
        # tag -> plain caller ID, for audit_caller_ids (only where the tag matches)
        b.caller_ids = {row[14]: plain_of[row[13]] for row in b.decisions
                        if row[14] and row[13] in plain_of}

    def _caller_ids(self, b: records.Batch) -> list[tuple[str, str]]:
        """Sealed numbers behind caller-ID tags, from the requested caller IDs."""
        out = []
        for tag, requested in b.caller_ids.items():
            if tag in self._known_cids:
                continue
            info = parse_number(requested, self.settings.default_region)
            if info.e164 and self.keys.cid_tag(info.e164) == tag:
                out.append((tag, self._sealer_().seal(info.e164)))
        return out

    def sync_pools(self, every_s: float = 60.0) -> int:
        """Caller IDs the guard may pick (pool hashes: tag -> sealed number) into
        audit_caller_ids, so reports can name the caller ID behind a tag."""
        now = time.monotonic()
        if now < self._next_pool_sync:
            return 0
        self._next_pool_sync = now + every_s
        try:
            with self.pool.connection(timeout=2) as conn:
                names = [r[0] for r in conn.execute("select name from audit_campaigns").fetchall()]
                with self.redis.pipeline(transaction=False) as pipe:
                    for k in [self.keys.pool(None)] + [self.keys.pool(n) for n in names]:
                        pipe.hgetall(k)
                    pools = pipe.execute()
                rows = {tag: tok for h in pools for tag, tok in h.items() if tag not in self._known_cids}
                if rows:
                    with conn.transaction():
                        conn.cursor().executemany("insert into audit_caller_ids (tag, number_enc) values (%s, %s) "
                                                  "on conflict do nothing", list(rows.items()))
                    self._known_cids.update(rows)
                return len(rows)
        except (psycopg.Error, PoolTimeout, RedisError, OSError) as exc:
            log.debug("caller-ID pool sync skipped: %s", exc)
            return 0

    def _commit(self, b: records.Batch) -> None:
        """One transaction for the whole batch; returns once COMMIT succeeded."""
        with self.pool.connection(timeout=5) as conn:
            if not self._schema_ok:
                require_schema(conn)
                if conn.execute("select 1 from dialguard_migrations where version = %s",
                                (SHIPPER_SCHEMA_VERSION,)).fetchone() is None:
                    raise SchemaMissing(f"migration {SHIPPER_SCHEMA_VERSION:03d} (calendar columns of decisions) "
                                        "is not applied: run `dialguard db migrate`")
                self._schema_ok = True
            try:
                self._stage(conn)
            except psycopg.errors.InsufficientPrivilege as exc:
                # no TEMPORARY privilege on this database: one INSERT per row (slower, same result)
                log.warning("cannot create staging tables (%s): inserting row by row", exc)
                self.insert_mode = "rows"
            with conn.transaction():
                self._insert(conn, b)
                self._maybe_crash("before_commit")
        self._known_campaigns.update(b.campaigns)
        self._known_cids.update(b.caller_ids)

    def _commit_one_by_one(self, b: records.Batch) -> None:
        """A batch with a poison entry: ship entry by entry; what cannot be
        inserted is kept raw in audit_rejects (never dropped)."""
        for name in TABLES:
            for row in getattr(b, name):
                one = records.Batch()
                getattr(one, name).append(row)
                try:
                    self._commit(one)
                except psycopg.Error as exc:
                    if not _is_poison(exc):
                        raise
                    self._reject(row[0] if name == "rejects" else row[1], row, exc)

    def _reject(self, sid: str, row: tuple, exc: Exception) -> None:
        err = f"{type(exc).__name__}: {exc}"
        log.error("stream entry %s cannot be inserted (%s): kept in audit_rejects", sid, err)
        for fields in ({"row": [None if x is None else str(x) for x in row]}, {"repr": repr(row)}):
            try:
                self._commit(records.Batch(rejects=[records.reject_of(sid, fields, err)]))
                self.stats.rejects += 1
                return
            except psycopg.Error as exc2:
                if not _is_poison(exc2):
                    raise
        log.critical("stream entry %s could not even be kept raw; its content: %r", sid, row)

    def _rows(self, entries: list[tuple[str, dict | None]]) -> records.Batch:
        b = records.to_batch(entries, short_hash)
        self.seal_requested_caller_ids(b)
        if b.rejects:
            self.stats.rejects += len(b.rejects)
            for sid, _, err in b.rejects:
                log.error("audit record %s is not readable (%s): kept in audit_rejects", sid, err)
        return b

    def _store(self, b: records.Batch) -> None:
        """One transaction for the batch (entry by entry if one is poison)."""
        if any(getattr(b, name) for name in TABLES):
            try:
                self._commit(b)
            except psycopg.Error as exc:
                if not _is_poison(exc):
                    raise
                self._commit_one_by_one(b)

    def ship(self, entries: list[tuple[str, dict | None]]) -> bool:
        """Ship one batch: PostgreSQL first, then acknowledge. Retries until it
        committed; False if asked to stop before (the entries stay pending)."""
        b = self._rows(entries)
        delay = 0.5
        while True:
            try:
                self._store(b)
                break
            except (psycopg.Error, PoolTimeout, SchemaMissing, OSError) as exc:
                self.stats.pg_errors += 1
                now = time.monotonic()
                if self._pg_down_since is None:
                    self._pg_down_since = now
                    self._next_pg_log = 0.0
                if now >= self._next_pg_log:
                    log.warning("PostgreSQL unavailable (%s: %s); %d entries waiting, retrying",
                                type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc) else "",
                                len(b))
                    self._next_pg_log = now + 30
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, 5)
        if self._pg_down_since is not None:
            log.info("PostgreSQL back after %.1fs", time.monotonic() - self._pg_down_since)
            self._pg_down_since = None
        self._maybe_crash("after_commit")
        self._ack(b.ids)
        self.stats.shipped += len(b)
        self.stats.batches += 1
        return True

    # -- the local spool -------------------------------------------------------------------
    def ship_spool(self) -> int:
        """Ship the spool files of this host (spool.py): rotate the active files,
        insert each file's records (chunks of SPOOL_CHUNK, one transaction
        each, ON CONFLICT DO NOTHING), delete the file only after its last
        COMMIT. Garbage lines become audit_rejects rows. PostgreSQL trouble:
        files are kept and retried at the next call. Returns records committed."""
        if not spool_files.pending(self.spool_dir, self.keys.prefix):
            return 0  # the usual case: nothing spooled (and no lock file made)
        done = 0
        with spool_files.ShipLock(self.spool_dir, self.keys.prefix) as mine:
            if not mine:
                return 0  # another shipper on this host is at it
            try:
                for path in spool_files.rotate(self.spool_dir, self.keys.prefix):
                    try:
                        data = spool_files.read_locked(path)
                    except FileNotFoundError:
                        continue
                    entries, bad = spool_files.parse(path.name, data)
                    garbage = [records.reject_of(sid, raw, err) for sid, raw, err in bad]
                    for sid, _, err in bad:
                        log.error("spool %s: %s (%s): kept in audit_rejects", path.name, sid, err)
                    self.stats.rejects += len(garbage)
                    for i in range(0, max(len(entries), 1), SPOOL_CHUNK):
                        chunk = entries[i:i + SPOOL_CHUNK]
                        b = self._rows(chunk)
                        if i == 0:
                            b.rejects.extend(garbage)
                        self._store(b)
                        self._maybe_crash("spool_before_delete", self._spool_commits)
                        self._spool_commits += 1
                        done += len(chunk)
                    path.unlink()
                    log.info("spool %s shipped: %d records, %d garbage lines", path.name, len(entries), len(bad))
            except (psycopg.Error, PoolTimeout, SchemaMissing, OSError) as exc:
                self.stats.spool_errors += 1
                log.warning("spool not shipped yet (%s: %s); retrying in %.0f s", type(exc).__name__,
                            str(exc).strip().splitlines()[0] if str(exc) else "", self.spool_every_s)
        self.stats.spooled += done
        return done

    def _spool_tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.spool_dir is not None and (force or now >= self._next_spool):
            self._next_spool = now + self.spool_every_s
            self.ship_spool()

    # -- test hook -------------------------------------------------------------------------
    def _maybe_crash(self, point: str, done: int | None = None) -> None:
        """DIALGUARD_AUDIT_SHIP_CRASH=<before_commit|after_commit|spool_before_delete>:<N>
        kills this process with SIGKILL at that point of the N-th batch (or
        spool transaction) (tests only)."""
        done = self.stats.batches if done is None else done
        if self._crash and self._crash[0] == point and done + 1 == self._crash[1]:
            log.warning("test crash point %s reached: SIGKILL", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    # -- loops -------------------------------------------------------------------------------
    def run(self, drain: bool = False, report_every_s: float = 10.0) -> Stats:
        """Ship until stopped (or, with drain, until the stream is empty)."""
        self.open()
        log.info("shipping %s (group %s, consumer %s) to %s", self.stream, GROUP, self.consumer, redact(self.dsn))
        next_report = time.monotonic() + report_every_s
        last_shipped = 0
        delay = 0.2
        group_ready = False
        while not self.stopping.is_set():
            try:
                if not group_ready:
                    self.ensure_group()
                    group_ready = True
                entries = self._read()
                delay = 0.2
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("consumer group missing (Redis lost its data?): creating it again")
                    group_ready = False
                    continue
                raise
            except RedisError as exc:
                self.stats.redis_errors += 1
                log.warning("Redis unavailable (%s); retrying", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5)
                continue
            if entries:
                if not self.ship(entries):
                    break
            else:
                self.sync_pools()
            self._spool_tick(force=drain and not entries)
            if not entries and drain:
                try:
                    if self.backlog() == 0 and not spool_files.pending(self.spool_dir, self.keys.prefix):
                        break
                except RedisError:
                    pass
            now = time.monotonic()
            if now >= next_report:
                rate = (self.stats.shipped - last_shipped) / (now - next_report + report_every_s)
                last_shipped = self.stats.shipped
                next_report = now + report_every_s
                try:
                    backlog = self.backlog()
                except RedisError:
                    backlog = -1
                log.info(json.dumps({"event": "audit_ship", "shipped": self.stats.shipped,
                                     "rate_per_s": round(rate, 1), "backlog": backlog,
                                     "rejects": self.stats.rejects, "spooled": self.stats.spooled}))
        log.info("stopped: %d entries shipped, %d spooled records", self.stats.shipped, self.stats.spooled)
        return self.stats


def _is_poison(exc: psycopg.Error) -> bool:
    """A row PostgreSQL will never take (bad data, constraint), as opposed to a
    database that is down or not migrated (retried)."""
    if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in POISON_CLASSES


def _row_of(b: records.Batch) -> tuple:
    for name in TABLES:
        rows = getattr(b, name)
        if rows:
            return rows[0]
    return ()


def _crash_point() -> tuple[str, int] | None:
    raw = os.environ.get("DIALGUARD_AUDIT_SHIP_CRASH", "")
    if not raw:
        return None
    point, _, n = raw.partition(":")
    return point, int(n or 1)


def backlog_status(settings: Settings, prefix: str | None = None) -> dict:
    """Backlog of the audit stream: entries not yet in PostgreSQL, pending per consumer."""
    keys = Keys(prefix or settings.key_prefix, settings.hash_secret)
    r = redisconn.sync_redis(settings, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
    try:
        out = {"stream": keys.audit, "backlog": int(r.xlen(keys.audit)), "ceiling": settings.audit_backlog_max,
               "pending": 0, "consumers": [], "oldest_age_s": None}
        sd = spool_files.spool_dir(settings)  # this host's spool: denials the stream never saw
        out["spool"] = {"dir": str(sd) if sd else None, "files": spool_files.pending(sd, keys.prefix)}
        first = r.xrange(keys.audit, count=1)
        if first:
            redis_now = r.time()
            now_ms = redis_now[0] * 1000 + redis_now[1] // 1000
            out["oldest_age_s"] = round((now_ms - records.stream_ms(first[0][0])) / 1000, 1)
        # lag: entries not delivered to the shipper yet. Not Redis's own `lag`:
        # that counter goes wrong for good when entries leave the stream behind
        # the group's back (trimmed, an AOF cut short by a crash: issue 13 saw
        # "lag: 22728" with backlog 0). The shipper deletes what it acknowledged,
        # so what the stream holds is pending (delivered) or not delivered yet.
        out["lag"] = out["backlog"]
        try:
            for g in r.xinfo_groups(keys.audit):
                if g["name"] == GROUP:
                    out["pending"] = int(g["pending"])
                    out["lag"] = max(0, out["backlog"] - out["pending"])
            out["consumers"] = [{"name": c["name"], "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                                for c in r.xinfo_consumers(keys.audit, GROUP)]
        except ResponseError:
            pass  # no stream or no group yet
        return out
    finally:
        r.close()
