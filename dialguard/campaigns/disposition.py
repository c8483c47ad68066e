"""A lead's disposition as an agent or the CLI gives it: shared by the dialer
(ari_app) and the CLI, so the dialer does not import the CLI."""

from __future__ import annotations

from datetime import datetime

from dialguard.timeutil import parse_time

DISPOSITIONS = ("success", "failed", "follow-up")


def parse_disposition(text: str) -> tuple[str, datetime | None]:
    """`success`, `failed`, or `follow-up@<ISO time with offset>`."""
    kind, _, at = text.strip().partition("@")
    if kind not in DISPOSITIONS:
        raise ValueError(f"disposition {kind!r}: expected one of {', '.join(DISPOSITIONS)}")
    if kind == "follow-up":
        if not at:
            raise ValueError("follow-up needs a time: follow-up@2025-03-04T10:00:00+08:00")
        return kind, parse_time(at)
    return kind, None
