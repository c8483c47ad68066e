"""Where a DNC import worker's microseconds go, per number, on one core: the
stages of dialguard.dnc._normalize_chunk timed one by one (process CPU time)
on rows of bench/dnc.py's mix (70 % E.164, 30 % national digits, CN), then
the whole worker function with and without the PostgreSQL sink's sealing.

    .venv/bin/python bench/dnc_stages.py [ROWS]     (default 200,000; no stack needed)
"""
import hmac, os, time, pickle, sys
from collections import defaultdict
from dialguard.numbers import normalize_bulk, fast_e164
from dialguard.crypto import Sealer
from dialguard.dnc import _normalize_chunk, seal_blocks, _LEN1
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
mult, add = 7_654_321, 137 * 1_000_003
raws = []
for i in range(N):
    d = f"137{(i * mult + add) % 100_000_000:08d}"
    raws.append(f"+86{d}" if i % 10 < 7 else d)
lines = list(range(2, N + 2))
secret = os.urandom(32); key = os.urandom(32)
def t(label, fn, reps=1):
    t0 = time.process_time()
    for _ in range(reps): out = fn()
    dt = (time.process_time() - t0) / reps
    print(f"{label:<40} {dt / N * 1e6:6.2f} us/number")
    return out
norm = t("normalize_bulk", lambda: [normalize_bulk(r, "CN") for r in raws])
e164s = [e for e, _ in norm]
digest = hmac.digest
ds = t("hmac.digest (one-shot, before stop 14)", lambda: [digest(secret, b"n:" + e.encode(), "sha256") for e in e164s])
keyed = hmac.new(secret, b"n:", "sha256").copy
def copied():
    out = []
    for e in e164s:
        h = keyed(); h.update(e.encode()); out.append(h.digest())
    return out
assert t("HMAC state copied per number (the worker)", copied) == ds
def group():
    g = defaultdict(list)
    for d in ds: g[(d[0] << 8) | d[1]].append(d[2:7])
    return {b: b"".join(r) for b, r in g.items()}
groups = t("group by bucket", group)
hashes = t("hash[:16]", lambda: [d[:16] for d in ds])
sealer = Sealer(key)
ebs = [e.encode() for e in e164s]
sealed = t("seal_raw_many (AES-GCM per number, before stop 15)", lambda: sealer.seal_raw_many(ebs))
def blocks_():
    recs = {h: _LEN1[len(e)] + e for h, e in zip(hashes, ebs)}
    return seal_blocks(sealer, recs)
block = t("blocks: dict, sort, join, AES-GCM per block", blocks_)
t("pickle of the result", lambda: pickle.dumps((groups, N, [], block)))
t("whole _normalize_chunk (PG on)", lambda: _normalize_chunk((lines, raws, "CN", secret, key)))
t("whole _normalize_chunk (Redis only)", lambda: _normalize_chunk((lines, raws, "CN", secret, None)))
