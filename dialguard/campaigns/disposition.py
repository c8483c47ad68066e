"""An agent's disposition of a lead (CLI `campaign disposition`, the dialer's
DIALGUARD_DISPOSITION channel variable): one parser for both."""

from __future__ import annotations

from datetime import datetime

DISPOSITIONS = ("success", "failed", "follow-up")


def parse_disposition(text: str) -> tuple[str, datetime | None]:
    """`success`, `failed`, or `follow-up@<ISO time with offset>`."""
    from dialguard.engine import parse_time

    kind, _, at = text.strip().partition("@")
    if kind not in DISPOSITIONS:
        raise ValueError(f"disposition {kind!r}: expected one of {', '.join(DISPOSITIONS)}")
    if kind == "follow-up":
        if not at:
            raise ValueError("follow-up needs a time: follow-up@2025-03-04T10:00:00+08:00")
        return kind, parse_time(at)
    return kind, None
