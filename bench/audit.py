#!/usr/bin/env python3
"""CPU and throughput of the audit shipper and of its PostgreSQL backend, per
insert path, side by side in one run.

    .venv/bin/python bench/audit.py          (after `make up`; about 2 minutes)
    options: --records 20000 --rate 500 --seconds 20 --batch 500
             --variants old=rows:0:+indexes,new=copy:500 --json FILE

Each variant (name=INSERT:LINGER_MS[:+indexes]) runs a shipper (dialguard.audit.shipper.Shipper
as a child process; INSERT `rows` = one INSERT ... ON CONFLICT DO NOTHING per
row, the path before bench/audit.py; `copy` = COPY into a temporary staging
table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING per table and
batch; LINGER_MS = how long a short read waits for more entries) against a
database of its own on the stack's PostgreSQL (migrated with sql/; `+indexes`
first puts back the indexes that sql/070 dropped) and a stream of its own on
the stack's Redis, through three phases:

- drain:  --records entries (a decision and its outcome per call, shaped as the
          engine writes them) waiting in the stream, shipped as fast as it can;
- paced:  --rate entries/s (500 = 250 calls/s, bench/cps.py's dialguard rate)
          written for --seconds while it ships: the steady state of a busy PBX;
- idle:   5 s with nothing to ship.

It prints, per phase, records/s (drain) and the CPU milliseconds per 1,000
records of the shipper process and of its PostgreSQL backend (utime + stime
from /proc, all threads), and the WAL bytes per record. Last, the ceiling: the
same rows COPYed (batches of --batch, one transaction each) into unlogged
tables with no index and no constraint, the CPU of this process's backend and
of this process (COPY only). Other work on the machine adds noise: it samples
the machine's CPU first and says so. The bench's databases and keys are
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from sipp import load_stack_env  # noqa: E402

load_stack_env()

import psycopg  # noqa: E402
import redis  # noqa: E402

from dialguard.audit import migrate, records  # noqa: E402
from dialguard.audit.db import sql_dirs  # noqa: E402
from dialguard.config import Settings  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
T0_MS = 1790560800000  # 2026-09-28 10:00 Asia/Shanghai
DEFAULT_VARIANTS = "old=rows:0:+indexes,new=copy:500"
# The indexes sql/070 dropped (as 010 created them): `+indexes` puts them back.
OLD_INDEXES = (
    "create index if not exists audit_decisions_campaign_at on audit_decisions (campaign, decided_at)",
    "create index if not exists audit_decisions_cid_at on audit_decisions (caller_id_hash, decided_at) "
    "where caller_id_hash is not null",
)


def ticks(pid: int) -> int:
    """utime + stime of a process, all threads, in clock ticks."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def cpu_busy(seconds: float = 1.0) -> float:
    def sample():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
    t1, i1 = sample()
    time.sleep(seconds)
    t2, i2 = sample()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


# -- the records ----------------------------------------------------------------------------------
def make_entries(n: int) -> list[dict[str, str]]:
    """n stream entries: a decision, then its outcome, as decide.lua and
    outcome.lua write them (field for field; sealed numbers, keyed hashes)."""
    from dialguard.crypto import Sealer

    sealer = Sealer()
    out = []
    for i in range(n // 2):
        did = uuid.uuid4().hex[:28]
        at = T0_MS + i * 4
        j = {"did": did, "at": at, "ts": at, "n": uuid.uuid4().hex, "ne": sealer.seal(f"+86138{i:08d}"),
             "campaign": "bench", "agent": f"a{i % 50}", "subject": None, "call_id": f"call-{did}", "pre": [],
             "cid_req": None, "rules": "cn-default", "rv": "9101eb2d31700ca8", "node": "vm"}
        out.append({"t": "decision", "id": did, "allow": "1", "r": "", "ch": uuid.uuid4().hex,
                    "cs": "k0:0,k1:0,k2:0,k3:0,k4:0", "rver": "", "sv": "", "sa": "", "sr": "", "ov": "", "ovr": "",
                    "j": json.dumps(j, separators=(",", ":"))})
        o = {"call_id": f"call-{did}", "at": at + 5000, "res": "answered", "talk_s": i % 90, "cause": 16,
             "subject": None, "node": "vm"}
        out.append({"t": "outcome", "id": uuid.uuid4().hex[:28], "did": did, "res": "answered",
                    "j": json.dumps(o, separators=(",", ":"))})
    return out


def xadd_all(r: redis.Redis, stream: str, entries: list[dict]) -> None:
    pipe = r.pipeline(transaction=False)
    for k, f in enumerate(entries):
        pipe.xadd(stream, f)
        if k % 1000 == 999:
            pipe.execute()
    pipe.execute()


# -- the shipper as a child process ----------------------------------------------------------------
def child(args) -> None:
    """Waits for "go" on stdin, then ships until SIGTERM."""
    import logging
    import signal

    from dialguard.audit.shipper import Shipper

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sh = Shipper(Settings(), prefix=args.prefix, dsn=args.dsn, consumer="bench", batch=args.batch,
                 block_ms=1000, linger_ms=args.linger_ms, insert=args.insert)
    signal.signal(signal.SIGTERM, sh.stop)
    sh.open()
    sh.ensure_group()
    with sh.pool.connection(timeout=10) as conn:
        pid = conn.info.backend_pid
    print(json.dumps({"backend": pid}), flush=True)
    sys.stdin.readline()
    try:
        sh.run()
    finally:
        sh.close()


class Variant:
    def __init__(self, spec: str):
        name, _, rest = spec.partition("=")
        parts = rest.split(":")
        self.name, self.insert, self.linger_ms = name, parts[0], int(parts[1] if len(parts) > 1 else 0)
        self.old_indexes = "+indexes" in parts[2:]


def run_variant(v: Variant, entries: list[dict], args, settings: Settings) -> dict:
    admin = os.environ.get("DIALGUARD_PG_ADMIN_DSN") or settings.pg_dsn
    service = psycopg.conninfo.conninfo_to_dict(settings.pg_dsn)
    login = str(service.get("user") or "dialguard")
    db = f"dgbench_audit_{v.name}_{uuid.uuid4().hex[:6]}"
    prefix = f"dgbench-audit-{v.name}-{uuid.uuid4().hex[:6]}"
    stream = f"{prefix}:{{g}}:audit"
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    admin_postgres = psycopg.conninfo.make_conninfo(admin, dbname="postgres")
    with psycopg.connect(admin_postgres, autocommit=True) as c:
        c.execute(f'create database "{db}"')
    dsn_admin = psycopg.conninfo.make_conninfo(admin, dbname=db)
    dsn = psycopg.conninfo.make_conninfo(settings.pg_dsn, dbname=db)
    out: dict = {"variant": v.name, "insert": v.insert, "linger_ms": v.linger_ms, "old_indexes": v.old_indexes}
    proc = None
    try:
        with psycopg.connect(dsn_admin, autocommit=True) as c:
            migrate.migrate(c, sql_dirs(), writers=[login])
            if v.old_indexes:
                for q in OLD_INDEXES:
                    c.execute(q)
        mon = psycopg.connect(dsn_admin, autocommit=True)

        def wal() -> int:
            return mon.execute("select pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]

        def rows() -> int:
            return mon.execute("select (select count(*) from audit_decisions) + "
                               "(select count(*) from audit_outcomes)").fetchone()[0]

        proc = subprocess.Popen([sys.executable, __file__, "--child", "--prefix", prefix, "--dsn", dsn,
                                 "--insert", v.insert, "--linger-ms", str(v.linger_ms), "--batch", str(args.batch)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        backend = json.loads(proc.stdout.readline())["backend"]
        n = len(entries)
        drain_set = entries[:n // 2 * 2]

        def snap():
            return ticks(proc.pid), ticks(backend), wal(), time.monotonic()

        def per_k(a, b, count):
            k = max(1, count) / 1000
            return {"shipper_ms_per_1k": round((b[0] - a[0]) * 1000 / HZ / k, 1),
                    "postgres_ms_per_1k": round((b[1] - a[1]) * 1000 / HZ / k, 1),
                    "wal_bytes_per_record": round((b[2] - a[2]) / max(1, count))}

        def wait_drained(expected: int, timeout: float = 600):
            t_end = time.monotonic() + timeout
            while not (r.xlen(stream) == 0 and rows() >= expected):
                if time.monotonic() > t_end:
                    raise RuntimeError(f"{v.name}: not drained after {timeout}s")
                time.sleep(0.02)

        # drain: a backlog of n records
        xadd_all(r, stream, drain_set)
        a = snap()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        wait_drained(len(drain_set))
        b = snap()
        out["drain"] = {"records": len(drain_set), "records_per_s": round(len(drain_set) / (b[3] - a[3])),
                        **per_k(a, b, len(drain_set))}
        # idle
        time.sleep(1)
        a = snap()
        time.sleep(5)
        b = snap()
        out["idle_cpu_ms_per_s"] = round(((b[0] - a[0]) + (b[1] - a[1])) * 1000 / HZ / (b[3] - a[3]), 2)
        # paced: --rate records/s for --seconds (fresh ids: a new call each)
        paced_set = make_entries(int(args.rate * args.seconds))
        a = snap()
        t_start = time.monotonic()
        k = 0
        while k < len(paced_set):
            due = int((time.monotonic() - t_start) * args.rate)
            due = min(len(paced_set), max(due, k))
            if due > k:
                pipe = r.pipeline(transaction=False)
                for f in paced_set[k:due]:
                    pipe.xadd(stream, f)
                pipe.execute()
                k = due
            time.sleep(0.01)
        wait_drained(len(drain_set) + len(paced_set))
        b = snap()
        out["paced"] = {"records": len(paced_set), "rate": args.rate, **per_k(a, b, len(paced_set))}
        mon.close()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()
        with psycopg.connect(admin_postgres, autocommit=True) as c:
            c.execute(f'drop database if exists "{db}" with (force)')
    return out


def ceiling(entries: list[dict], args, settings: Settings) -> dict:
    """COPY of the same rows into unlogged tables without index or constraint."""
    admin = os.environ.get("DIALGUARD_PG_ADMIN_DSN") or settings.pg_dsn
    db = f"dgbench_audit_ceiling_{uuid.uuid4().hex[:6]}"
    admin_postgres = psycopg.conninfo.make_conninfo(admin, dbname="postgres")
    with psycopg.connect(admin_postgres, autocommit=True) as c:
        c.execute(f'create database "{db}"')
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(admin, dbname=db), autocommit=True) as c:
            migrate.migrate(c, sql_dirs())
            for t, cols in (("decisions", records.DECISION_COLS), ("outcomes", records.OUTCOME_COLS)):
                c.execute(f"create unlogged table ceil_{t} as select {', '.join(cols)} from audit_{t} with no data")
            sids = [f"{T0_MS + k}-0" for k in range(len(entries))]
            batches = [records.to_batch(list(zip(sids[i:i + args.batch], entries[i:i + args.batch])))
                       for i in range(0, len(entries), args.batch)]
            backend = c.info.backend_pid
            a_me, a_pg, t0 = ticks(os.getpid()), ticks(backend), time.monotonic()
            for b in batches:
                with c.transaction():
                    for t, cols in (("decisions", records.DECISION_COLS), ("outcomes", records.OUTCOME_COLS)):
                        with c.cursor().copy(f"copy ceil_{t} ({', '.join(cols)}) from stdin") as cp:
                            for row in getattr(b, t):
                                cp.write_row(row)
            b_me, b_pg, t1 = ticks(os.getpid()), ticks(backend), time.monotonic()
        k = len(entries) / 1000
        return {"records": len(entries), "records_per_s": round(len(entries) / (t1 - t0)),
                "client_copy_ms_per_1k": round((b_me - a_me) * 1000 / HZ / k, 1),
                "postgres_ms_per_1k": round((b_pg - a_pg) * 1000 / HZ / k, 1)}
    finally:
        with psycopg.connect(admin_postgres, autocommit=True) as c:
            c.execute(f'drop database if exists "{db}" with (force)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000, help="backlog drained (decision + outcome per call)")
    ap.add_argument("--rate", type=int, default=500, help="records/s written in the paced phase")
    ap.add_argument("--seconds", type=float, default=20, help="length of the paced phase")
    ap.add_argument("--batch", type=int, default=500, help="shipper --batch")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help="name=INSERT:LINGER_MS[:+indexes],... (INSERT rows|copy)")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    ap.add_argument("--insert", default="copy", help=argparse.SUPPRESS)
    ap.add_argument("--linger-ms", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    settings = Settings()
    busy = cpu_busy()
    noisy = "; BUSY: CPU figures are noisy (higher), rates lower" if busy > 20 else ""
    print(f"bench/audit.py: {os.cpu_count()} CPUs ({busy:.0f}% busy before){noisy}; "
          f"{args.records} records drained, {args.rate}/s for {args.seconds:g} s paced, batches of {args.batch}",
          flush=True)
    entries = make_entries(args.records)
    results = []
    for spec in args.variants.split(","):
        v = Variant(spec)
        res = run_variant(v, entries, args, settings)
        results.append(res)
        d, p = res["drain"], res["paced"]
        print(f"{v.name:>10} ({v.insert}, linger {v.linger_ms} ms{', old indexes' if v.old_indexes else ''}): "
              f"drain {d['records_per_s']} records/s, shipper {d['shipper_ms_per_1k']} + PostgreSQL "
              f"{d['postgres_ms_per_1k']} ms CPU per 1,000, WAL {d['wal_bytes_per_record']} B/record | "
              f"paced {p['rate']}/s: shipper {p['shipper_ms_per_1k']} + PostgreSQL {p['postgres_ms_per_1k']} ms per "
              f"1,000 ({(p['shipper_ms_per_1k'] + p['postgres_ms_per_1k']) * 2 / 1000:.2f} ms per call of 2 records), "
              f"WAL {p['wal_bytes_per_record']} B/record | idle {res['idle_cpu_ms_per_s']} ms CPU/s", flush=True)
    c = ceiling(entries, args, settings)
    print(f"{'ceiling':>10} (COPY into unlogged tables, no index): {c['records_per_s']} records/s, "
          f"PostgreSQL {c['postgres_ms_per_1k']} ms + client COPY {c['client_copy_ms_per_1k']} ms CPU per 1,000")
    if args.json:
        Path(args.json).write_text(json.dumps({"busy_before": busy, "variants": results, "ceiling": c}, indent=1))


if __name__ == "__main__":
    main()
