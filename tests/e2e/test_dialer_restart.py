"""The dialer killed (SIGKILL) and restarted with a call up: the maximum duration
still holds, and the outcome is reported once.

The dialer runs as its own process (`dialguard dialer run`, in the rig's Redis
namespace and test clock), so it can be killed like a crashed service. The callee
is a number ending in 77 (scenarios/dialer_carrier): it answers, sends DTMF 9 after
1 s and stays up 30 s; the campaign's opt-out key is `#`, so the 9 is just a key.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from test_dialer_calls import number, rig  # noqa: F401  (fixture)

UTC = timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DialerProcess:
    """`dialguard dialer run` for one campaign of the rig, in its own session."""

    def __init__(self, rig, campaign: str, agents: list[str], *, app: str | None = None,
                 metrics_port: int | None = None, name: str | None = None, env: dict[str, str] | None = None):
        self.rig, self.campaign, self.agents = rig, campaign, agents
        self.extra_env = env or {}
        self.app = app or rig.app
        self.metrics_port = metrics_port if metrics_port is not None else free_port()
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "DialerProcess":
        self.runs += 1
        env = {**os.environ, "DIALGUARD_TEST_CLOCK": "1", "DIALGUARD_KEY_PREFIX": self.rig.prefix,
               "DIALGUARD_DIALER_METRICS_PORT": str(self.metrics_port), **self.extra_env}
        if self.name:
            env["DIALGUARD_DIALER_NAME"] = self.name
        agents = ",".join(f"{a}={self.rig.agent(a)}" for a in self.agents)
        self.log = self.rig.workdir / f"dialer-{self.app}-{self.runs}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dialguard.cli", "dialer", "run", "--agents", agents,
                 "--campaign", self.campaign, "--app", self.app],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, the OOM killer)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def wait_row(rig, camp: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rows = [c for c in await rig.calls(camp) if c["state"] == state]
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no call {state} in {timeout}s: {await rig.calls(camp)}"
        await asyncio.sleep(0.1)


async def wait_log(d: DialerProcess, text: str, timeout: float) -> datetime:
    """The time the process's log first showed `text` (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    while text not in d.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in {timeout}s: {d.output()}"
        await asyncio.sleep(0.05)
    return datetime.now(UTC)


async def outcome_records(rig, channel_id: str) -> list[dict]:
    """Outcomes the engine recorded for this call (its audit stream, in the rig's namespace)."""
    out = []
    for _id, f in await rig.engine.redis.xrange(rig.engine.keys.audit):
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in f.items()}
        if f.get("t") == "outcome" and json.loads(f["j"]).get("call_id") == channel_id:
            out.append(f)
    return out


async def long_call_campaign(rig, tmp_path, limit_s: int) -> tuple[str, str]:
    pack = tmp_path / "limit.yaml"
    pack.write_text(f"pack: limit-{limit_s}s\nmax_duration_s: {limit_s}\n")
    n = number("77")
    camp = await rig.campaign([n], optout_key="#")
    await rig.engine.set_campaign(camp, True, rules=f"cn-default,{pack}")
    return camp, n


async def test_bridged_call_cut_at_its_limit_after_sigkill(rig, tmp_path):
    limit = 8
    camp, n = await long_call_campaign(rig, tmp_path, limit)
    d = DialerProcess(rig, camp, ["agent1"]).start()
    try:
        row = await wait_row(rig, camp, "bridged")
        assert row["max_duration_s"] == limit
        assert row["hangup_deadline"] == row["answered_at"] + timedelta(seconds=limit)  # stored at answer
        d.kill()
        assert (datetime.now(UTC) - row["answered_at"]).total_seconds() < limit - 4, "killed too late"
        d.start()
        # the new process's start alone took 5 s on a loaded CI machine: up before the
        # deadline, it cuts the call itself; later, Asterisk's own cut has ended it
        connected = await wait_log(d, "ARI events connected", timeout=30)
        leads = await rig.settle(camp, timeout=40)
    finally:
        d.stop()
    [c] = await rig.calls(camp)
    held = (c["ended_at"] - c["answered_at"]).total_seconds()
    assert limit - 0.3 <= held <= limit + 1.0, (held, d.output())
    if connected < row["hangup_deadline"] - timedelta(seconds=1):
        assert "reached its maximum duration" in d.output(), d.output()
    assert c["result"] == "conversation" and c["outcome_reported"], c
    assert leads[n]["state"] == "done" and leads[n]["attempts"] == 1
    assert len(await outcome_records(rig, c["channel_id"])) == 1


async def without_asterisks_limit(rig, customer: str) -> None:
    """Clears the TIMEOUT(absolute) the dialer set on both legs at the bridge: the call
    of a dialer that could not set it, which only a restarted dialer can cut."""
    from ari_app.client import AriClient

    ari = AriClient(rig.stack.ari_url, rig.stack.ari_user, rig.stack.ari_password, rig.app)
    try:
        for ch in (customer, "dga-" + customer[4:]):
            await ari.post(f"channels/{ch}/variable", variable="TIMEOUT(absolute)", value="0")
    finally:
        await ari.close()


async def test_bridged_call_ends_at_its_limit_with_no_dialer(rig, tmp_path):
    """SIGKILLed once bridged and not restarted until well past the limit: Asterisk
    ends both legs at the limit by itself (TIMEOUT(absolute) set at the bridge), the
    customer's without the abandon message; the next dialer records the conversation
    from the dialplan's trace, its talk time to that end."""
    from test_dialer_calls import ended_in_asterisk

    limit = 4
    camp, n = await long_call_campaign(rig, tmp_path, limit)
    d = DialerProcess(rig, camp, ["agent1"]).start()
    try:
        row = await wait_row(rig, camp, "bridged")
        d.kill()
        cid = row["channel_id"]
        left = (row["hangup_deadline"] - datetime.now(UTC)).total_seconds()
        assert left > 1, "killed too late"
        await ended_in_asterisk(rig, [cid, "dga-" + cid[4:]], timeout=left + 3)
        gone = datetime.now(UTC)
        assert (gone - row["answered_at"]).total_seconds() <= limit + 1.5, (gone, row)
        await asyncio.sleep(1)
        assert (await rig.calls(camp))[0]["state"] == "bridged"  # no dialer ran meanwhile
        d.start()
        leads = await rig.settle(camp, timeout=40)
    finally:
        d.stop()
    [c] = await rig.calls(camp)
    held = (c["ended_at"] - c["answered_at"]).total_seconds()
    assert limit + 0.2 <= held <= limit + 1.5, (held, d.output())  # Asterisk's cut, 0.5 s after the dialer's
    assert c["result"] == "conversation" and c["outcome_reported"], c
    assert limit - 1 <= c["talk_s"] <= limit + 1, c
    assert leads[n]["state"] == "done" and leads[n]["attempts"] == 1
    assert len(await outcome_records(rig, cid)) == 1


async def test_call_past_its_deadline_cut_at_once_on_restart(rig, tmp_path):
    limit = 3
    camp, n = await long_call_campaign(rig, tmp_path, limit)
    d = DialerProcess(rig, camp, ["agent1"]).start()
    try:
        row = await wait_row(rig, camp, "bridged")
        d.kill()
        await without_asterisks_limit(rig, row["channel_id"])
        await asyncio.sleep(max(0.0, (row["hangup_deadline"] - datetime.now(UTC)).total_seconds()) + 2)
        assert (await rig.calls(camp))[0]["state"] == "bridged"  # nobody cut it while the dialer was dead
        restarted = datetime.now(UTC)
        d.start()
        # when the new process is up (its Python start alone took 5 s on a loaded CI machine)
        connected = await wait_log(d, "ARI events connected", timeout=30)
        await rig.settle(camp, timeout=40)
    finally:
        d.stop()
    [c] = await rig.calls(camp)
    # cut as soon as the new process is up and has reconciled, not at a later sweep
    assert (c["ended_at"] - connected).total_seconds() < 3, (c, connected, d.output())
    assert (c["ended_at"] - restarted).total_seconds() < 30, (c, d.output())
    assert c["result"] == "conversation" and c["outcome_reported"]
    assert len(await outcome_records(rig, c["channel_id"])) == 1
