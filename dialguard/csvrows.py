"""What the bulk imports (DNC lists, dialer leads) agree on about a CSV file: the
headers that name the number column, the rule for the first row, and the
report of a row that runs over several lines.

The first row is a header naming the number column (NUMBER_COLS; case, spaces,
`-` and `_` do not matter) or a row whose first column is a valid number (no
header: every row is data, numbers in column 1). Anything else (`Contact`, a
title row, `Alice,+8613800138000`) is an error naming the headers accepted,
never a guess: a guessed header drops a row nobody counts.

A quote opened and not closed on its line makes the csv module read the lines
after it into the same field, up to the next quote or the end of the file.
Those lines must not vanish into one rejected (or, worse, accepted) value: the
readers compare `reader.line_num` from one record to the next and reject a
record that took more than one line, naming the lines (spanned()).
"""

from __future__ import annotations

from dialguard.numbers import parse_number

NUMBER_COLS = ("number", "phone", "phone_number", "tel", "telephone", "telephone_number", "mobile",
               "mobile_number", "cell", "msisdn", "e164",
               "电话", "手机", "号码", "电话号码", "手机号", "手机号码", "联系电话", "联系方式")


class HeaderError(ValueError):
    """The first row is neither a header naming the number column nor a number."""


def norm(h: str) -> str:
    """A header as compared: `Phone Number`, `phone-number`, ` PHONE_NUMBER` -> `phone_number`."""
    return "_".join(h.strip().lstrip("\ufeff").lower().replace("-", " ").replace("_", " ").split())


def find(header: list[str], names: tuple[str, ...]) -> int | None:
    low = [norm(h) for h in header]
    for n in names:
        if n in low:
            return low.index(n)
    return None


def number_column(row: list[str], line: int, region: str) -> int | None:
    """The first row's verdict: the number column if `row` is a header naming it,
    None if `row` is data (its first column a valid number); else HeaderError."""
    col = find(row, NUMBER_COLS)
    if col is not None:
        return col
    if row and parse_number(row[0].strip().lstrip("\ufeff"), region).valid:
        return None
    shown = ", ".join(repr(c) for c in row[:6] if c) or "empty"
    raise HeaderError(
        f"line {line} ({shown}) is not a header naming the number column, nor a row starting with a number. "
        f"Accepted number column headers: {', '.join(NUMBER_COLS)} (case, spaces, - and _ do not matter). "
        f"Without a header, the first column holds the numbers.")


def spanned(first: int, last: int) -> str:
    """Why a record read from lines first..last (first < last) is rejected."""
    return (f"lines {first}-{last}: a quote opened on line {first} is not closed on that line, so lines "
            f"{first}-{last} were read as one row and none of them was imported (fix the quote, or the line "
            f"break inside quotes, and import these lines again)")


def unclosed(line: int) -> str:
    """Why the last record is rejected when its quote is still open at the end of the file."""
    return (f"line {line}: a quote opened on line {line} is not closed before the end of the file, so the row "
            f"was not imported (fix the quote and import this line again)")
