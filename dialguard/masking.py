"""The one way dialguard shows a number in logs and reports (issue 13).

A module of its own, without phonenumbers, so the classic AGI script and the
FastAGI server's session log import it for nothing (dialguard.numbers re-exports it).
"""

from __future__ import annotations

import re


def mask_number(number: str | None) -> str | None:
    """The one way dialguard shows a number in logs and reports: the last four
    digits, the rest as '*' (+8613800000001 -> *********0001). Enough to
    recognise a number a caller reads out, not to dial it."""
    if not number:
        return number
    digits = [c for c in number if c.isdigit()]
    return "*" * max(0, len(digits) - 4) + "".join(digits[-4:])


_DIGIT_RUN = re.compile(r"(?<![-\d])\+?\d{7,}")  # not a channel's "-00000001" sequence


def mask_digits(text: str | None) -> str | None:
    """Free text for logs (a channel name such as Local/98613800000001@default):
    every run of 7 or more digits masked like a number, but a channel's
    sequence number after '-'."""
    if not text:
        return text
    return _DIGIT_RUN.sub(lambda m: mask_number(m.group()), text)


