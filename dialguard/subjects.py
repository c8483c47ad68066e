"""Several subjects in one conversation (Reg F comment 14(b)(4)-1.ii: a call
about a medical debt in which the credit-card debt is also discussed starts
the 7-day quiet period for both).

Every path that reports an outcome can name the other subjects discussed: the
dialplan (channel variable DIALGUARD_SUBJECTS, read by the AGI `report`), the
dialer (DIALGUARD_SUBJECTS set on the call or the agent's leg), the CLI
(`dialguard outcome --subject`). Each is applied to the call's record exactly
as `simulate` applies an outcome naming another subject, so the live path and
a replay give the same answers.
"""

from __future__ import annotations

import re
from datetime import datetime

MAX_SUBJECTS = 20
_SPLIT = re.compile(r"[|;\s]+")


def parse_subjects(text: str | None) -> list[str]:
    """"debt-2|debt-3" (also ";" or spaces between them): the subjects, in order,
    each once. Raises ValueError for more than MAX_SUBJECTS or one over 256 characters."""
    out: list[str] = []
    for s in _SPLIT.split(text or ""):
        if not s or s in out:
            continue
        if len(s) > 256:
            raise ValueError(f"subject {s[:20]!r}... is longer than 256 characters")
        out.append(s)
    if len(out) > MAX_SUBJECTS:
        raise ValueError(f"{len(out)} subjects: at most {MAX_SUBJECTS} in one outcome")
    return out


async def report_other_subjects(engine, call_id: str, outcome, subjects: list[str],
                                now: datetime | None = None) -> int:
    """After the call's own outcome was reported: start the quiet period of each
    other subject discussed. Only a conversation does (an outcome without one
    discussed nothing). Returns how many the call's record took."""
    if outcome.result != "conversation":
        return 0
    n = 0
    for s in subjects:
        if await engine.report_outcome(call_id, outcome, now=now, subject=s):
            n += 1
    return n
