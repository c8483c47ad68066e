"""One year of a calendar as an operator loads it (SPEC §9).

The shared shape of a calendar file: what `dialguard calendar import` reads
from YAML or from the State Council's yearly notice (calendar_notice.py), and
what is published to every node. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class CalendarFileError(ValueError):
    """A calendar file or notice that cannot be accounted for.

    `line` is the 1-based line number where reading stopped (0 when the
    problem is not tied to one line), `text` that line's content.
    """

    def __init__(self, message: str, line: int = 0, text: str = ""):
        self.message = message
        self.line = line
        self.text = text
        where = f"line {line}: {text.strip()!r}: " if line else ""
        super().__init__(f"{where}{message}")


@dataclass(frozen=True)
class CalendarFile:
    calendar: str  # ISO 3166-1 or 3166-2 code, upper case: CN, US-LA
    year: int
    holidays: frozenset[date] = field(default_factory=frozenset)  # non-calling days
    working_days: frozenset[date] = field(default_factory=frozenset)  # weekend days made working days
    source: str = ""

    def __post_init__(self):
        both = self.holidays & self.working_days
        if both:
            raise CalendarFileError(f"days listed both as holiday and working day: {sorted(both)}")
        for d in self.holidays | self.working_days:
            if d.year != self.year:
                raise CalendarFileError(f"{d.isoformat()} is not in {self.year}")
