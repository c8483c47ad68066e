"""Every phone number the test session handed to the system (issue 13's at-rest check).

tests/conftest.py records, in this process: the rows written to SIPp
injection files, the numbers and caller IDs guard.py generates, the leads
given to the dialer's store, and every number and caller ID the engine
decided on or was told about (opt-out, DNC, caller IDs approved). The last e2e
file (test_zz_numbers_at_rest.py) greps the stack's files for all of them.
"""

from __future__ import annotations

import re

USED: set[str] = set()
_NUMBER = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}$")


def record(*values) -> None:
    for v in values:
        if isinstance(v, str) and _NUMBER.match(v.strip()):
            USED.add(v.strip())


def national_digits(number: str) -> str | None:
    """The national significant number (what every written form of it contains),
    or the digits of an unparsable one; None when too short to search safely."""
    import phonenumbers

    digits = "".join(c for c in number if c.isdigit())
    try:
        p = phonenumbers.parse(number, None if number.startswith("+") else "CN")
        if phonenumbers.is_valid_number(p):
            digits = str(p.national_number)
    except phonenumbers.NumberParseException:
        pass
    return digits if len(digits) >= 7 else None


# Seven or eight digits turn up by chance inside hex digests and millisecond
# timestamps (a CI run once found a 7-digit test caller ID inside the AOF's
# numeric data). A short needle counts only as a number of its own: at most a
# country code before it, and no letter or digit on either side.
SHORT = 9


def matcher(digits: str):
    """A predicate over bytes: does this data hold the number `digits`?"""
    needle = digits.encode()
    if len(digits) >= SHORT:
        return lambda data: needle in data
    pattern = re.compile(rb"(?<![0-9A-Za-z])\+?[0-9]{0,3}" + needle + rb"(?![0-9A-Za-z])")
    return lambda data: needle in data and pattern.search(data) is not None


_DIGIT_RUN = re.compile(rb"[0-9]{7,}")


def digits_present(data: bytes, wanted: set[str]) -> set[str]:
    """Which of `wanted` (digit strings of 7 digits or more) occur anywhere in
    data, as in `digits in data`: a superset of what matcher() finds, in one pass
    over data. A string of digits occurs only inside a run of digits, so every
    run's substrings of the wanted lengths are looked up in the set, instead of
    searching the whole data once for each of the session's thousands of numbers
    (which took minutes over the stack's AOF, WAL and data files)."""
    lengths = sorted({len(w) for w in wanted})
    found = set()
    for run in {m.decode() for m in _DIGIT_RUN.findall(data)}:
        n = len(run)
        for k in lengths:
            for i in range(n - k + 1):
                if run[i:i + k] in wanted:
                    found.add(run[i:i + k])
    return found
