"""One AGI session per call: the outcome of an allowed call reaches the guard
through Asterisk's CEL file (CELGenUserEvent in [dialguard-report]) and
dialguard-agi-outcomes, exactly once, even when the reader is killed and the
FastAGI server restarted while the call is up (issue 21, item 4)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from audit import outcomes
from guard import REPO_ROOT, Cdr, agi_server, numbers, place_calls, render, scenario, tag

SCEN = "guard_outcome_reader"


def reader(action: str) -> None:
    """scripts/agi-outcomes.sh start|stop|restart: only the stack's outcome reader."""
    out = subprocess.run([str(REPO_ROOT / "scripts" / "agi-outcomes.sh"), action], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"agi-outcomes.sh {action} failed: {out.stderr or out.stdout}")


def kill_reader(stack_dir: Path) -> None:
    """SIGKILL: no shutdown code runs (a crash, the OOM killer)."""
    pid = int((stack_dir / "services" / "outcomes.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"outcome reader {pid} still alive after SIGKILL")


def cel_file(stack_dir: Path) -> Path:
    return stack_dir / "asterisk" / "log" / "cel-custom" / "dialguard-outcomes.csv"


def reader_caught_up(stack_dir: Path, timeout: float = 30.0) -> None:
    """Wait until the reader's saved offset is the CEL file's end."""
    cel = cel_file(stack_dir)
    state = stack_dir / "services" / "outcomes.offset"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cel.exists():
            return  # a fresh stack: no guarded call has ended yet, nothing to read
        try:
            if json.loads(state.read_text())["offset"] == cel.stat().st_size:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError("the outcome reader did not reach the end of the CEL file")


async def wait_leases(guard, cid: str, want: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await guard.live_leases(cid) == want:
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(f"caller ID leases did not reach {want} within {timeout} s "
                         f"(now {await guard.live_leases(cid)})")


async def test_outcome_arrives_once_across_reader_and_server_restarts(stack, guard, tmp_path: Path) -> None:
    campaign, (cid,) = await guard.campaign("outcomes", rules=scenario(SCEN, "pack.yaml"), pool=1)
    (number,) = numbers(1)
    values = dict(campaign=campaign, agent=f"e2e-agent-{tag()}", number=number)
    cdr = Cdr.mark(stack.dir)
    reader_caught_up(stack.dir)
    cel = cel_file(stack.dir)
    cel_mark = cel.stat().st_size if cel.exists() else 0  # a fresh stack has no CEL file yet
    try:
        # The call is answered and held 3 s (a conversation); while it is up the
        # reader is killed and the FastAGI server restarted.
        call = asyncio.create_task(asyncio.to_thread(
            place_calls, stack, render(scenario(SCEN, "call.csv"), tmp_path / "call.csv", **values),
            tmp_path / "call", rate=1, hold_ms=3000))
        await wait_leases(guard, cid, 1, 10)  # allowed, dialed, up
        kill_reader(stack.dir)
        await asyncio.to_thread(agi_server, "restart")
        first = await call
        assert first.uac.failed == 0, first.uac.describe()
        (row,) = cdr.for_numbers({number}, expect=1)[number]
        assert row["dialguard_result"] == "ALLOW", row
        decision_id = row["dialguard_decision_id"]

        # Hung up with no reader: nothing released the lease.
        await asyncio.sleep(1.0)
        assert await guard.live_leases(cid) == 1, "the lease was released without the reader"

        # The reader comes back and catches up from its saved offset.
        await asyncio.to_thread(reader, "start")
        await wait_leases(guard, cid, 0, 10)
        assert outcomes(stack.pg_dsn, decision_id) == ["conversation"]

        # Replayed (the saved offset set back to before the call, as after a
        # crash between applying a line and saving the offset): still once.
        await asyncio.to_thread(reader, "stop")
        (stack.dir / "services" / "outcomes.offset").write_text(
            json.dumps({"inode": cel.stat().st_ino, "offset": cel_mark}))
        await asyncio.to_thread(reader, "start")
        await asyncio.to_thread(reader_caught_up, stack.dir)
        await asyncio.sleep(2.0)  # the audit shipper's batch delay
        assert outcomes(stack.pg_dsn, decision_id) == ["conversation"]

        # The quiet period started from the reported conversation: the number is
        # not called again (the caller ID is free: the lease was released).
        again = place_calls(stack, render(scenario(SCEN, "call.csv"), tmp_path / "again.csv", **values),
                            tmp_path / "again")
        assert again.invites == [], again.carrier.describe()
        rows = cdr.for_numbers({number}, expect=2)[number]
        assert "post_conversation_quiet" in rows[-1]["dialguard_reasons"].split(","), rows
    finally:
        if subprocess.run([str(REPO_ROOT / "scripts" / "agi-outcomes.sh"), "status"],
                          capture_output=True).returncode != 0:
            reader("start")


async def test_lease_released_within_a_second_of_hangup(stack, guard, tmp_path: Path) -> None:
    campaign, (cid,) = await guard.campaign("outcomes-fast", rules=scenario(SCEN, "pack.yaml"), pool=1)
    (number,) = numbers(1)
    values = dict(campaign=campaign, agent=f"e2e-agent-{tag()}", number=number)
    reader_caught_up(stack.dir)
    done = place_calls(stack, render(scenario(SCEN, "call.csv"), tmp_path / "call.csv", **values),
                       tmp_path / "call", hold_ms=500)
    # place_calls returns once SIPp saw the call's BYE answered: the hangup.
    hung_up = time.monotonic()
    assert done.uac.failed == 0 and len(done.invites) == 1, done.uac.describe()
    await wait_leases(guard, cid, 0, 5)
    took = time.monotonic() - hung_up
    assert took <= 1.0, f"caller-ID lease released {took:.2f} s after the hangup"
