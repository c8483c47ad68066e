"""Property: the sliding log never admits more than the cap in any rolling window."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, load_pack_file
from dialguard.simulate import _drop_namespace

START = datetime(2026, 11, 23, 0, tzinfo=timezone.utc)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.integers(1, 4), window_s=st.integers(1, 600),
       gaps=st.lists(st.integers(0, 400), min_size=1, max_size=40))
def test_never_more_than_cap_in_any_window(tmp_path, settings, cap, window_s, gaps):
    rules = tmp_path / "p.yaml"
    rules.write_text(f"pack: p\ndefault_region: CN\ncaps:\n  - {{id: c, max: {cap}, window: {{rolling: {window_s}s}}}}\n")

    async def run():
        e = await Engine.create(settings, Policy([load_pack_file(rules)]), prefix=f"dgp:{uuid.uuid4().hex[:8]}",
                                skip_caller_id_without_pool=True)
        await e.set_campaign("c")
        t = START
        allowed: list[datetime] = []
        try:
            for g in gaps:
                t = t + timedelta(seconds=g)
                d = await e.decide(DecisionRequest(number="13800138000", campaign="c", agent="a"), now=t)
                # the exact model: allowed iff fewer than cap attempts in (t - W, t]
                in_window = [a for a in allowed if a > t - timedelta(seconds=window_s)]
                assert d.allowed == (len(in_window) < cap)
                if d.allowed:
                    allowed.append(t)
                else:
                    assert d.next_eligible_at == sorted(in_window)[len(in_window) - cap] + timedelta(seconds=window_s)
        finally:
            await _drop_namespace(e.redis, e.keys.prefix)
            await e.close()
        for a in allowed:
            assert len([b for b in allowed if a <= b < a + timedelta(seconds=window_s)]) <= cap

    asyncio.run(run())
