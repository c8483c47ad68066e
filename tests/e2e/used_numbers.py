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
