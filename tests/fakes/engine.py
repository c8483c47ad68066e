"""A small fake engine with scripted answers, for the FastAGI protocol tests
(in-process, or in a server subprocess through
DIALGUARD_AGI_ENGINE_FACTORY=fakes.engine:fake_engine_factory)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import datetime, timezone

from dialguard.decision.models import Decision, DecisionRequest, Outcome


class FakeEngine:
    """The engine's interface with scripted answers (protocol tests only)."""

    def __init__(self, mode: str = "allow", delay_s: float = 0.0, log_path: str | None = None,
                 max_duration_s: int = 3600):
        self.mode = mode
        self.max_duration_s = max_duration_s
        self.delay_s = delay_s
        self.log_path = log_path
        self.calls: list[tuple] = []

    def _log(self, *call) -> None:
        self.calls.append(call)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(call, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o)) + "\n")

    async def _maybe_fail(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "raise":
            raise RuntimeError("fake engine failure")

    async def decide(self, req: DecisionRequest, now: datetime | None = None) -> Decision:
        self._log("decide", req.model_dump())
        await self._maybe_fail()
        did = uuid.uuid4().hex
        if self.mode.startswith("deny"):
            reasons = (self.mode.partition(":")[2] or "attempt_cap").split(",")
            return Decision(decision_id=did, decision="deny", reasons=reasons,
                            next_eligible_at=datetime(2025, 3, 4, 1, 0, tzinfo=timezone.utc),
                            number=req.number)
        return Decision(decision_id=did, decision="allow", reasons=[], caller_id=req.caller_id or "+861012345678",
                        max_duration_s=self.max_duration_s, number=req.number)

    async def report_outcome(self, call_id: str, outcome: Outcome, now: datetime | None = None) -> None:
        self._log("report_outcome", call_id, outcome.model_dump())
        await self._maybe_fail()

    async def opt_out(self, number: str, now: datetime | None = None) -> None:
        self._log("opt_out", number)
        await self._maybe_fail()

    async def complaint(self, number: str, now: datetime | None = None) -> None:
        self._log("complaint", number)
        await self._maybe_fail()

    async def close(self) -> None:
        pass


async def fake_engine_factory() -> FakeEngine:
    """For subprocess tests: DIALGUARD_FAKE_ENGINE=allow|deny[:r1,r2]|raise|down,
    DIALGUARD_FAKE_ENGINE_DELAY_S, DIALGUARD_FAKE_ENGINE_LOG (JSON lines of calls),
    DIALGUARD_FAKE_ENGINE_MAXDURATION (seconds, default 3600)."""
    mode = os.environ.get("DIALGUARD_FAKE_ENGINE", "allow")
    if mode == "down":
        raise ConnectionError("fake engine: Redis unreachable")
    return FakeEngine(mode, float(os.environ.get("DIALGUARD_FAKE_ENGINE_DELAY_S", "0")),
                      os.environ.get("DIALGUARD_FAKE_ENGINE_LOG"),
                      int(os.environ.get("DIALGUARD_FAKE_ENGINE_MAXDURATION", "3600")))
