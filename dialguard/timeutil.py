"""Time helpers shared by the core and the adapters: one UTC, one way to read
an ISO time from a person, one way to read the milliseconds Redis stores."""

from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with an offset (or Z), as UTC; no offset is an error, never a guess.
    Every bad input is a ValueError, also a time whose UTC form falls outside years 1-9999."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError(f"time {text!r} has no UTC offset")
        return t.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {text!r} is out of range (in UTC it falls outside years 1 to 9999)") from None


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def from_ms(v) -> datetime:
    """Milliseconds since the epoch (a number or its text, as Redis returns it) as a UTC time."""
    return datetime.fromtimestamp(float(v) / 1000, UTC)
