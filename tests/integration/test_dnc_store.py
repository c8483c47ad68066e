"""DNC at scale: fingerprint buckets in Redis, CSV import with rejects and resume."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from dialguard.dnc import BUCKETS, REC_BYTES, DncStore, false_positive_bound, fingerprint, import_csv
from dialguard.simulate import _drop_namespace


@pytest.fixture
async def store(make_engine):
    e = await make_engine("cn-default")
    return DncStore(e.redis, e.keys), e


def tags(e, numbers):
    return [e.keys.number_tag(n) for n in numbers]


async def test_add_contains_remove_count(store):
    st, e = store
    nums = [f"+86138{i:08d}" for i in range(2000)]
    assert await st.add("g", tags(e, nums)) == 2000
    assert await st.add("g", tags(e, nums[:10])) == 0  # idempotent
    assert await st.count("g") == 2000
    for n in nums[::97]:
        assert await st.contains("g", e.keys.number_tag(n))
    absent = [f"+86139{i:08d}" for i in range(2000)]
    assert not any([await st.contains("g", e.keys.number_tag(n)) for n in absent])
    assert await st.remove("g", tags(e, nums[:500])) == 500
    assert await st.count("g") == 1500
    assert not await st.contains("g", e.keys.number_tag(nums[0]))
    assert await st.contains("g", e.keys.number_tag(nums[500]))
    # nothing plaintext: values are 5-byte records
    async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:{{dnc}}:g:*"):
        if not k.endswith(b":count"):
            v = await e.redis.get(k)
            assert len(v) % REC_BYTES == 0 and b"86138" not in v


def test_fingerprint_layout_and_bound():
    b, rec = fingerprint("ffffffffffffff" + "0" * 18)
    assert b == BUCKETS - 1 and rec == b"\xff" * 5
    assert false_positive_bound(10_000_000) < 1e-9
    assert false_positive_bound(7_000_000_000) < 1e-7


async def test_import_reports_rejects_and_resumes(store, tmp_path):
    st, e = store
    path = tmp_path / "dnc.csv"
    rows = [["name", "phone"]]
    good = []
    for i in range(3000):
        if i % 100 == 7:
            rows.append([f"n{i}", "not-a-number"])
        elif i % 100 == 8:
            rows.append([f"n{i}", "110"])
        else:
            n = f"138{i:08d}"
            good.append("+86" + n)
            rows.append([f"n{i}", n])
    rows.append(["dup", "+86 138 0000 0000"])  # duplicate of row 1
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    rejects = tmp_path / "rejects.csv"
    checkpoint = tmp_path / "ckpt"
    # first run "interrupted" after one chunk: simulate by a checkpoint of a partial run
    r1 = await import_csv(st, "g", path, "CN", e.settings.hash_secret, rejects_path=rejects,
                          checkpoint=checkpoint, chunk_rows=1000, workers=1)
    assert r1.rows == 3001 and r1.rejected == 60 and r1.valid == 2941 and r1.added == 2940 and r1.duplicates == 1
    assert await st.count("g") == 2940
    bad = list(csv.reader(open(rejects)))
    assert bad[0] == ["line", "value", "why"] and len(bad) == 61
    assert bad[1][0] == "9" and bad[1][1] == "not-a-number" and "unparseable" in bad[1][2]
    assert not checkpoint.exists()
    for n in good[::50]:
        assert await st.contains("g", e.keys.number_tag(n))


async def test_import_resumes_from_checkpoint(store, tmp_path):
    st, e = store
    path = tmp_path / "dnc.csv"
    path.write_text("".join(f"138{i:08d}\n" for i in range(2499)) + "junk\n")
    checkpoint, rejects = tmp_path / "ckpt", tmp_path / "rej.csv"

    class Died(Exception):
        pass

    def die_at(n):
        if n >= 1000:
            raise Died

    with pytest.raises(Died):  # a run that stored the first 1000 rows and died
        await import_csv(st, "g", path, "CN", e.settings.hash_secret, checkpoint=checkpoint, rejects_path=rejects,
                         chunk_rows=500, workers=1, progress=die_at)
    state = json.loads(checkpoint.read_text())
    assert state["rows"] == 1000 and state["totals"]["added"] == 1000
    await st.remove("g", [e.keys.number_tag("+8613800000000")])  # so a redo of the first rows would show
    with open(rejects, "a") as f:
        f.write("9999,half-written,by the crash\n")  # written after the checkpoint: cut back on resume
    r = await import_csv(st, "g", path, "CN", e.settings.hash_secret, checkpoint=checkpoint, rejects_path=rejects,
                         chunk_rows=700, workers=1)
    assert r.resumed_from == 1000 and r.rows == 2500 and r.added == 2499 and r.rejected == 1
    assert not await st.contains("g", e.keys.number_tag("+8613800000000"))   # skipped (was "done")
    assert await st.contains("g", e.keys.number_tag("+8613800002498"))
    assert list(csv.reader(open(rejects))) == [["line", "value", "why"], ["2500", "junk", r.samples[0][2]]]
    # a checkpoint of another version of the file is not trusted
    checkpoint.write_text(json.dumps(state | {"size": state["size"] + 1}))
    r = await import_csv(st, "g", path, "CN", e.settings.hash_secret, checkpoint=checkpoint, chunk_rows=700,
                         workers=1)
    assert r.resumed_from == 0 and "started over" in r.resume_note and r.added == 1


def test_cli_import_and_count(settings, tmp_path):
    prefix = f"dgdnc:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix}
    path = tmp_path / "list.csv"
    path.write_text("number\n13800138000\ngarbage\n+8613800138001\n")
    # Redis only: the stack's PostgreSQL is shared (test_dnc_export.py covers the list at rest)
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "import", str(path), "--json", "--no-db"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["added"] == 2 and rep["rejected"] == 1 and rep["rejected_samples"][0]["line"] == 3
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "count", "--json"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert json.loads(p.stdout)["entries"] == 2
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "import", str(tmp_path / "none.csv"),
                        "--no-db"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and "no such file" in p.stderr
    import redis as r
    c = r.Redis.from_url(settings.redis_url)
    for k in c.scan_iter(match=f"{prefix}:*"):
        c.delete(k)


async def test_imported_list_denies_inside_the_decision(store, tmp_path):
    from datetime import datetime, timezone

    from dialguard.decision.models import DecisionRequest

    st, e = store
    await e.set_campaign("c1")
    await e.set_campaign("c2")
    await e.approve_caller_id("+862150000001", pool=True)
    now = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)
    listed = [f"+86138{i:08d}" for i in range(0, 5000, 7)]
    await st.add("g", tags(e, listed[:300]))
    await st.add(st.list_name("c2"), tags(e, listed[300:]))

    def r(n, c="c1"):
        return DecisionRequest(number=n, campaign=c, agent="a")

    d = await e.decide(r(listed[5]), now=now)
    assert d.reasons == ["dnc"] and d.next_eligible_at is None
    assert (await e.decide(r(listed[400]), now=now)).allowed               # only on c2's list
    assert (await e.decide(r(listed[401], "c2"), now=now)).reasons == ["dnc"]
    assert (await e.decide(r("+8613900000001"), now=now)).allowed
    # `dnc remove` clears a bulk-imported entry too
    assert await e.dnc_remove(listed[6])
    assert (await e.decide(r(listed[6]), now=now)).allowed


async def test_cli_import_every_line_is_listed_or_reported(make_engine, tmp_path):
    """`dialguard dnc import` of a file with a quote left open in the middle (closed
    two lines on) and one left open to the end: before, the csv reader took the lines
    after each quote into one value, rejected as 'number too long' at the record's last
    line, and the numbers on those lines were neither listed nor reported (and would be
    called). Now each such record is one rejected row naming its lines, the rows after
    a closed quote are listed, and header + listed + reported lines cover the file."""
    e = await make_engine()
    st = DncStore(e.redis, e.keys)
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": e.keys.prefix}
    nums = [f"+86139{i:08d}" for i in range(12)]
    lines = ["number", nums[0], f'"{nums[1]}', nums[2], f'{nums[3]}"', nums[4], nums[5], "garbage", nums[6],
             f'"{nums[7]}', nums[8], nums[9]]
    path, rejects = tmp_path / "dnc.csv", tmp_path / "rej.csv"
    path.write_text("\n".join(lines) + "\n")
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "import", str(path), "--json", "--no-db",
                        "--rejects", str(rejects)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    listed = [n for n in nums if await st.contains(st.list_name(None), e.keys.number_tag(n))]
    assert listed == [nums[0], nums[4], nums[5], nums[6]]
    assert (rep["rows"], rep["added"], rep["rejected"]) == (7, 4, 3)
    bad = list(csv.reader(open(rejects)))[1:]
    assert [(int(ln), v, w.split(":")[0]) for ln, v, w in bad] == [
        (3, nums[1], "lines 3-5"), (8, "garbage", "unparseable"), (10, nums[7], "lines 10-12")]
    assert "a quote opened on line 10 is not closed" in bad[2][2]
    covered = {1} | {lines.index(n) + 1 for n in listed}
    for ln, _, why in bad:
        m = re.match(r"lines (\d+)-(\d+): ", why)
        covered |= set(range(int(m[1]), int(m[2]) + 1)) if m else {int(ln)}
    assert covered == set(range(1, len(lines) + 1))


def test_cli_import_refuses_a_file_whose_first_row_is_neither_header_nor_number(settings, tmp_path):
    """`Alice,+86...` on line 1 was taken for a header (dropped, uncounted) and every
    other row rejected; `Name,Phone Number` was not recognised. Now the first is refused
    whole with the headers accepted, the second imports its column."""
    prefix = f"dgdnc:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix}
    try:
        path = tmp_path / "named.csv"
        path.write_text("Alice,+8613900000001\nBob,+8613900000002\n")
        p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "import", str(path), "--json", "--no-db"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 2, (p.stdout, p.stderr)
        err = " ".join(p.stderr.split())
        assert "line 1 ('Alice'" in err and "Accepted number column headers: number, phone" in err, err
        assert "Nothing was imported" in err and not (tmp_path / "named.csv.rejects.csv").exists()
        for header in ("Name,Phone Number", "姓名,手机号"):
            path.write_text(f"{header}\nAlice,+8613900000001\nBob,13900000002\n", encoding="utf-8")
            p = subprocess.run([sys.executable, "-m", "dialguard.cli", "dnc", "import", str(path), "--json",
                                "--no-db"], capture_output=True, text=True, timeout=120, env=env)
            assert p.returncode == 0, p.stderr
            rep = json.loads(p.stdout)
            assert (rep["rows"], rep["valid"], rep["rejected"]) == (2, 2, 0), (header, rep)
    finally:
        import redis as r
        c = r.Redis.from_url(settings.redis_url)
        for k in c.scan_iter(match=f"{prefix}:*"):
            c.delete(k)
