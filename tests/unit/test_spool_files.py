"""The local audit spool's files (dialguard/audit/spool.py): appends, rotation
by the shipper while writers write, the size bound, garbage lines."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import stat

import pytest

from dialguard.audit import spool as S
from dialguard.audit.records import to_batch
from dialguard.config import Settings


def rec(i: int, ts: int = 1795000000000) -> dict:
    return {"t": "decision", "id": f"d{i}", "allow": "0", "r": "guard_unavailable", "ch": "", "cs": "",
            "j": json.dumps({"did": f"d{i}", "at": ts, "ts": ts + i, "n": "h", "campaign": "c", "agent": "a"})}


def ship_all(d) -> list[dict]:
    """What a shipper would do: rotate, read under the lock, parse, delete."""
    got = []
    for p in S.rotate(d):
        entries, bad = S.parse(p.name, S.read_locked(p))
        assert not bad
        got += [f for _, f in entries]
        p.unlink()
    return got


def test_append_one_line_per_record_in_a_file_of_this_process(tmp_path):
    sp = S.Spool(tmp_path)
    assert sp.append(rec(1)) and sp.append(rec(2))
    path = tmp_path / f"decisions.dg.{os.getpid()}.jsonl"
    assert sp.path == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [rec(1), rec(2)] and sp.appended == 2


def test_rotate_then_the_writer_starts_a_new_file(tmp_path):
    sp = S.Spool(tmp_path)
    sp.append(rec(1))
    files = S.rotate(tmp_path)
    assert len(files) == 1 and files[0].name.startswith(f"decisions.dg.{os.getpid()}.")
    assert files[0].name.endswith(".shipping") and not sp.path.exists()
    sp.append(rec(2))  # the old fd points to the renamed file: the writer must notice
    assert [json.loads(x)["id"] for x in sp.path.read_text().splitlines()] == ["d2"]
    assert [json.loads(x)["id"] for x in files[0].read_text().splitlines()] == ["d1"]
    # a .shipping file left by a killed shipper is returned again, oldest first; empty files are left alone
    (tmp_path / "decisions.dg.1.jsonl").touch()
    again = S.rotate(tmp_path)
    assert again[0] == files[0] and len(again) == 2 and (tmp_path / "decisions.dg.1.jsonl").exists()


def test_each_key_prefix_has_its_own_files(tmp_path):
    """A shipper ships the spool of the installation (key prefix) whose stream it ships."""
    a, b = S.Spool(tmp_path, prefix="dg"), S.Spool(tmp_path, prefix="test:x.y/z")
    a.append(rec(1))
    b.append(rec(2))
    assert b.path.name == f"decisions.test%3Ax%2Ey%2Fz.{os.getpid()}.jsonl"
    assert S.pending(tmp_path, "dg") == 1 and S.pending(tmp_path, "test:x.y/z") == 1 and S.pending(tmp_path) == 2
    got = S.rotate(tmp_path, "test:x.y/z")
    assert len(got) == 1 and json.loads(got[0].read_text())["id"] == "d2" and a.path.exists()
    with S.ShipLock(tmp_path, "dg") as x, S.ShipLock(tmp_path, "test:x.y/z") as y:
        assert x and y


def _writer(d: str, start: int, n: int) -> None:
    sp = S.Spool(d)
    for i in range(start, start + n):
        assert sp.append(rec(i))


def test_concurrent_writers_and_shipper_lose_nothing_and_duplicate_nothing(tmp_path):
    """Two writer processes append 3,000 records each while the shipper rotates,
    reads and deletes in a loop: every record is shipped exactly once."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 10000, 3000)) for k in range(2)]
    for p in procs:
        p.start()
    got = []
    while any(p.is_alive() for p in procs):
        got += ship_all(tmp_path)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    got += ship_all(tmp_path)
    ids = [f["id"] for f in got]
    assert len(ids) == 6000 and len(set(ids)) == 6000


def test_full_spool_drops_counts_logs_and_records_the_loss_later(tmp_path, caplog):
    one = len(json.dumps(rec(0), separators=(",", ":"))) + 1
    sp = S.Spool(tmp_path, max_bytes=3 * one + 10, node="n1")
    with caplog.at_level(logging.CRITICAL, "dialguard.audit.spool"):
        assert [sp.append(rec(i)) for i in range(5)] == [True, True, True, False, False]
    assert sp.dropped == 2 and "NOT recorded" in caplog.text
    assert len(sp.path.read_text().splitlines()) == 3
    assert len(ship_all(tmp_path)) == 3
    sp._others_at = -1e9  # the next append looks at the directory again (cached for 1 s)
    assert sp.append(rec(9))
    first, second = [json.loads(x) for x in sp.path.read_text().splitlines()]
    assert first["t"] == "admin" and second["id"] == "d9"
    b = to_batch([("1-0", first)])
    assert b.admin and b.admin[0][2] == "audit_spool_dropped"
    j = json.loads(first["j"])
    assert j["dropped"] == 2 and j["node"] == "n1" and j["first_at"] <= j["at"]
    assert sp.dropped == 2  # the process total stays


def test_unwritable_spool_drops_instead_of_raising(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sp = S.Spool(blocker / "spool")  # a directory under a regular file cannot exist
    assert sp.append(rec(1)) is False and sp.dropped == 1


def test_garbage_lines_become_rejects_with_their_place(tmp_path):
    good = json.dumps(rec(1))
    data = "\n".join([good, "not json", json.dumps({"t": "decision", "n": 5}), json.dumps(["x"]),
                      json.dumps({"t": "decision", "id": "x", "j": "{}"}), "", good[:20]]).encode()
    entries, bad = S.parse("decisions.dg.7.1.shipping", data)
    assert [(sid.split("-")[0], f["id"]) for sid, f in entries] == [("1795000000001", "d1")]
    assert [b[0] for b in bad] == [f"spool:decisions.dg.7.1.shipping:{i}" for i in (2, 3, 4, 5, 7)]
    assert bad[0][1] == {"raw": "not json"} and "torn" in bad[-1][2] and "no time" in bad[3][2]


def test_synthetic_stream_id_from_ts_else_at():
    assert S.spool_stream_id({"j": json.dumps({"ts": 1795000000123, "at": 1})}).startswith("1795000000123-")
    assert S.spool_stream_id({"j": json.dumps({"at": 1795000000000})}).startswith("1795000000000-")


def test_synthetic_stream_ids_differ_per_line_and_stay_per_file():
    # Two denies of one millisecond: each line its own id; shipping the file again gives the same ids.
    lines = [json.dumps({**rec(i), "j": json.dumps({"ts": 1795000000123, "at": 1795000000123})}) for i in (1, 2)]
    data = ("\n".join(lines) + "\n").encode()
    first, _ = S.parse("decisions.dg.7.1.shipping", data)
    again, _ = S.parse("decisions.dg.7.1.shipping", data)
    ids = [sid for sid, _ in first]
    assert len(set(ids)) == 2 and ids == [sid for sid, _ in again]
    for sid in ids:
        ms, seq = sid.split("-")
        assert ms == "1795000000123" and int(seq) >= 1 << 48  # above any real entry's sequence
        assert int(seq) < 1 << 63  # PostgreSQL's bigint (rebuild orders by it)
    with pytest.raises(ValueError):
        S.spool_stream_id({"j": json.dumps({"ts": "soon"})})


def test_from_settings(tmp_path):
    base = Settings()
    assert S.Spool.from_settings(dataclasses.replace(base, spool_dir="")) is None
    assert S.Spool.from_settings(dataclasses.replace(base, spool_dir="off")) is None
    sp = S.Spool.from_settings(dataclasses.replace(base, spool_dir=str(tmp_path / "a" / "b"), spool_max_mb=1,
                                                   key_prefix="p1"))
    assert sp.max_bytes == 1024 * 1024 and (tmp_path / "a" / "b").is_dir() and sp.prefix == "p1"
    assert S.Spool.from_settings(dataclasses.replace(base, spool_dir=str(tmp_path)), prefix="p2").prefix == "p2"
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_one_shipper_per_spool_directory(tmp_path):
    with S.ShipLock(tmp_path) as first:
        with S.ShipLock(tmp_path) as second:
            assert first and not second
    with S.ShipLock(tmp_path) as again:
        assert again


def test_pending(tmp_path):
    assert S.pending(tmp_path) == 0 and S.pending(None) == 0
    S.Spool(tmp_path).append(rec(1))
    assert S.pending(tmp_path) == 1
    S.rotate(tmp_path)
    assert S.pending(tmp_path) == 1
