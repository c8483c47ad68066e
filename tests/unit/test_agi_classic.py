"""The classic AGI script as Asterisk runs it: a subprocess speaking AGI on
stdin/stdout, driven by a scripted peer (same protocol code as FastAGI)."""

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agi.client import AgiPeer, env_block

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "agi" / "dialguard-agi"
CHECK = ("check", "+8613800138000", "c1", "a1")


async def run_script(args, *, mode="allow", extra_env=None, raw: bytes | None = None,
                     wrapper=False, tmp_path=None, **serve_kw):
    env = dict(os.environ, DIALGUARD_AGI_ENGINE_FACTORY="fakes.engine:fake_engine_factory",
               DIALGUARD_FAKE_ENGINE=mode, PYTHONPATH=os.pathsep.join((str(ROOT), str(ROOT / "tests"))), DIALGUARD_AGI_SESSION_TIMEOUT="3")
    if tmp_path is not None:
        env["DIALGUARD_FAKE_ENGINE_LOG"] = str(tmp_path / "calls.jsonl")
    if wrapper:
        env["DIALGUARD_PYTHON"] = sys.executable
    env.update(extra_env or {})
    cmd = [str(WRAPPER), *args] if wrapper else [sys.executable, "-m", "agi.dialguard_agi", *args]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd="/")
    peer = AgiPeer(proc.stdout, proc.stdin)
    await peer.send(raw if raw is not None else env_block(None, args, network=False))
    if raw is not None:
        proc.stdin.close()
    res = await peer.serve(**serve_kw)
    err = await proc.stderr.read()
    rc = await asyncio.wait_for(proc.wait(), 10)
    logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    return res, rc, logs


async def test_classic_check_allow():
    res, rc, logs = await run_script(CHECK)
    assert rc == 0
    assert res.history[0] == ("DIALGUARD_RESULT", "DENY")
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert res.variables["DIALGUARD_CALLERID"] == "+861012345678"
    assert logs[-1]["outcome"] == "allow" and logs[-1]["mode"] == "classic"


async def test_classic_wrapper_deny(tmp_path):
    res, rc, _ = await run_script(("check?campaign=c2", "+8613800138000", "", "a1"), mode="deny:dnc",
                                  wrapper=True, tmp_path=tmp_path)
    assert rc == 0 and res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_REASONS"] == "dnc"
    call = json.loads((tmp_path / "calls.jsonl").read_text().splitlines()[0])
    assert call[0] == "decide" and call[1]["campaign"] == "c2"


async def test_classic_engine_down_denies():
    res, rc, _ = await run_script(CHECK, mode="down")
    assert res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"


async def test_classic_report(tmp_path):
    res, rc, _ = await run_script(("report", "NOANSWER", "", "0", "19", "d1"), tmp_path=tmp_path)
    assert rc == 0 and res.commands == []
    call = json.loads((tmp_path / "calls.jsonl").read_text())
    assert call == ["report_outcome", "1700000000.1", {"result": "no_answer", "talk_s": 0, "hangup_cause": 19,
                                                     "sip_code": None}]


@pytest.mark.parametrize("raw", [
    b"",
    b"agi_request: x\nagi_arg_1: check\n",  # short block then EOF
    b"garbage\n\n",
    b"agi_request: x\nagi_arg_1: check\nagi_arg_2: \xff\n\n",
    b"agi_request: x\n\n",  # no handler name
    b"agi_request: x\nagi_arg_1: nosuch\n\n",
])
async def test_classic_malformed_input_never_allows(raw):
    res, rc, logs = await run_script(CHECK, raw=raw)
    assert rc == 0 and res.commands == []
    assert logs[-1]["outcome"] in ("protocol_error", "unknown_script")


async def _until_handled(pid: int, sig: int, timeout: float = 30) -> None:
    """Until /proc says `pid` catches or ignores `sig`."""
    bit = 1 << (sig - 1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        if (int(fields["SigCgt"], 16) | int(fields["SigIgn"], 16)) & bit:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} never installed a handler for signal {sig}")


async def test_classic_survives_sighup_from_asterisk():
    # Asterisk signals SIGHUP to a classic AGI when the channel hangs up; the
    # script must still finish (a report has to reach the engine).
    env = dict(os.environ, DIALGUARD_AGI_ENGINE_FACTORY="fakes.engine:fake_engine_factory",
               DIALGUARD_FAKE_ENGINE_DELAY_S="0.5", PYTHONPATH=os.pathsep.join((str(ROOT), str(ROOT / "tests"))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agi.dialguard_agi", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    peer = AgiPeer(proc.stdout, proc.stdin)
    await peer.send(env_block(None, CHECK, network=False))
    # Signal once the script handles SIGHUP (not after a fixed delay: a loaded
    # machine may not have started Python yet, and the default action kills).
    await _until_handled(proc.pid, signal.SIGHUP)
    proc.send_signal(signal.SIGHUP)
    res = await peer.serve(hangup_before=1)
    await proc.wait()
    assert proc.returncode == 0
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")


def test_wrapper_is_executable():
    assert os.access(WRAPPER, os.X_OK)
    assert WRAPPER.read_text().startswith("#!/bin/sh")
