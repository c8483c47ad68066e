"""PostgreSQL's CPU per DNC row for two shapes of dnc_entries: today's (hex
text key, base64 text sealed number) against a bytea one (16-byte key, raw
sealed bytes). The same rows COPYed in hash order, batches of 200,000 (as the
import's workers write them); the backend's CPU from /proc per row, and the
table + index size per row; the bytea shape also in COPY's binary format (what
`dnc import` writes since sql/225). A scratch table (dgbench_scratch_dnc), dropped afterwards.

    .venv/bin/python bench/dnc_pg_shapes.py [ROWS]  (after `make up`, with the stack's env;
                                                     DIALGUARD_PG_ADMIN_DSN: it creates a table)
"""
import asyncio, os, sys, time, base64, hmac, struct
import psycopg
from dialguard.dnc import PGCOPY_HEADER, PGCOPY_TRAILER
def copy_rows_frame(list_, source):
    """(before the 16-byte hash, after the sealed number) of a binary COPY row (list, hash, sealed, source)."""
    lb, sb = list_.encode(), source.encode()
    return struct.pack(">hi", 4, len(lb)) + lb + struct.pack(">i", 16), struct.pack(">i", len(sb)) + sb
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
BATCH = 200_000
TICK = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK
async def main():
    dsn = os.environ.get("DIALGUARD_PG_ADMIN_DSN") or os.environ["DIALGUARD_PG_DSN"]
    secret, nonce = os.urandom(32), os.urandom(12)
    rows = []
    for i in range(N):
        h = hmac.digest(secret, b"n:+86137%08d" % i, "sha256")[:16]
        enc = os.urandom(12 + 14 + 16)
        rows.append((h, enc))
    shapes = {
        "text (today)": ("list text not null, number_hash text not null, number_enc text not null, source text not null, "
                          "added_at timestamptz not null default now(), primary key (list, number_hash)",
                          lambda h, e: f"global\t{h.hex()}\t{base64.b64encode(e).decode()}\tbench\n"),
        "bytea key + bytea sealed": ("list text not null, number_hash bytea not null, number_enc bytea not null, "
                          "source text not null, added_at timestamptz not null default now(), primary key (list, number_hash)",
                          lambda h, e: f"global\t\\\\x{h.hex()}\t\\\\x{e.hex()}\tbench\n"),
        "bytea, binary COPY": ("list text not null, number_hash bytea not null, number_enc bytea not null, "
                          "source text not null, added_at timestamptz not null default now(), primary key (list, number_hash)",
                          None),
    }
    pre, post = copy_rows_frame("global", "bench")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        pid = (await (await conn.execute("select pg_backend_pid()")).fetchone())[0]
        for label, (cols, fmt) in shapes.items():
            await conn.execute("drop table if exists dgbench_scratch_dnc")
            await conn.execute(f"create table dgbench_scratch_dnc ({cols})")
            blocks = []
            for i in range(0, N, BATCH):
                part = sorted(rows[i:i + BATCH])
                if fmt is None:
                    blocks.append(PGCOPY_HEADER + b"".join(pre + h + struct.pack(">i", len(e)) + e + post
                                                           for h, e in part) + PGCOPY_TRAILER)
                else:
                    blocks.append("".join(fmt(h, e) for h, e in part).encode())
            c0, t0 = cpu(pid), time.perf_counter()
            for b in blocks:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        how = " (format binary)" if fmt is None else ""
                        async with cur.copy("copy dgbench_scratch_dnc (list, number_hash, number_enc, source) "
                                            f"from stdin{how}") as cp:
                            await cp.write(b)
            c1, t1 = cpu(pid), time.perf_counter()
            size = (await (await conn.execute("select pg_total_relation_size('dgbench_scratch_dnc')")).fetchone())[0]
            print(f"{label:<28} backend CPU {(c1 - c0) / N * 1e6:5.2f} us/row, wall {(t1 - t0) / N * 1e6:5.2f} us/row, "
                  f"{size / N:5.1f} bytes/row on disk (table + index)", flush=True)
        await conn.execute("drop table if exists dgbench_scratch_dnc")
asyncio.run(main())
