"""Lead files (CSV, XLSX): read, normalize to E.164, de-duplicate, report rejected rows.

A lead file has a header row naming a number column (NUMBER_COLS: `number`,
`phone`, `phone number`, `tel`, `mobile`, `msisdn`..., or Chinese 电话 / 手机 / 号码 /
电话号码 / 手机号码...; case, spaces, `-` and `_` do not matter); optional subject and
name columns. A file without header is accepted when its first row's first
column already holds a valid number (every row is data, numbers in column 1);
any other first row (an unknown header such as `Contact`, a title row) is an
error naming the headers accepted, never a guess (dialguard/csvrows.py, shared
with the DNC import). A row that cannot be read (a CSV field over 128 KiB, a
quote not closed on its line, which would take the lines after it into one
field) is rejected with its lines, the rest imported. Line
numbers in the report are the file's own (1-based, header included), so an
operator can find the row.
Optional columns say where the callee lives and who they are (SPEC §2): `region`
(ISO 3166-2, e.g. US-FL), `postal_code` (`zip`, `zip_code`, `postcode`, 邮编)
and `party` (`account`, `person`, `customer_id`, `debtor`): the guard applies
the stated location's rules too. A row whose region or postal code is not
written as one is rejected with the reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dialguard.csvrows import HeaderError, find, number_column, spanned, unclosed
from dialguard.location import LocationError, parse_postal_code, parse_region
from dialguard.numbers import parse_number

SUBJECT_COLS = ("subject", "debt", "order", "reference", "事由", "订单", "订单号")
NAME_COLS = ("name", "customer", "customer_name", "姓名", "客户", "客户名称")
REGION_COLS = ("region", "state_region", "iso_region", "地区")
POSTAL_COLS = ("postal_code", "zip", "zip_code", "zipcode", "postcode", "邮编")
PARTY_COLS = ("party", "account", "person", "customer_id", "debtor")


@dataclass(frozen=True)
class Lead:
    line: int
    number: str  # E.164
    subject: str = ""
    name: str | None = None
    region: str | None = None
    postal_code: str | None = None
    party: str | None = None


@dataclass(frozen=True)
class Reject:
    line: int
    value: str
    why: str


@dataclass
class ParsedLeads:
    leads: list[Lead] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows: int = 0
    duplicates_in_file: int = 0


class LeadFileError(ValueError):
    pass


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable workbook
            raise LeadFileError(f"{path}: not a readable XLSX workbook: {exc}") from None
        try:
            ws = wb.worksheets[0]
            for i, row in enumerate(ws.iter_rows(values_only=True), start=1):
                yield i, [_cell(v) for v in row]
        finally:
            wb.close()
    elif suffix in (".csv", ".txt", ""):
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                sample = f.read(4096)
                f.seek(0)
                try:
                    dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
                except csv.Error:
                    dialect = csv.excel
                reader = csv.reader(f, dialect)
                last = 0  # the line the previous record ended on
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
                        last = reader.line_num
                        yield last, CsvProblem(f"row not readable: {exc}")
                        continue
                    line = reader.line_num
                    if line > last + 1:  # a quote left open took the lines after it into this record
                        yield last + 1, CsvProblem(spanned(last + 1, line), row)
                    elif any("\n" in c or "\r" in c for c in row):  # the last line, its quote still open
                        yield line, CsvProblem(unclosed(line), row)
                    else:
                        yield line, [c.strip() for c in row]
                    last = line
        except UnicodeDecodeError as exc:
            raise LeadFileError(f"{path}: not UTF-8 text ({exc}); save the CSV as UTF-8") from None
    else:
        raise LeadFileError(f"{path}: unsupported file type {suffix!r} (CSV or XLSX)")


class CsvProblem(str):
    """Why a CSV row could not be read (rejected with its line, the import goes on),
    with the fields the csv reader made of it, if any."""

    def __new__(cls, why: str, fields: list[str] | None = None):
        self = super().__new__(cls, why)
        self.fields = fields or []
        return self


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # a number typed into Excel: 13800138000.0
    return str(v).strip()


def parse_leads(path: Path, default_region: str) -> ParsedLeads:
    out = ParsedLeads()
    if not path.exists():
        raise LeadFileError(f"{path}: no such file")
    rows = _rows(path)
    cols: tuple[int | None, ...] | None = None
    seen: set[tuple[str, str]] = set()
    for line, row in rows:
        if isinstance(row, CsvProblem):
            if cols is None and row.fields:  # the header's own quote left open: no column is known
                raise LeadFileError(f"{path}: {row} Nothing was imported.")
            out.rows += 1
            ni = cols[0] if cols else 0
            cell = row.fields[ni] if ni < len(row.fields) else ""
            out.rejects.append(Reject(line, cell.split("\n", 1)[0].strip()[:64], str(row)))
            continue
        if cols is None:
            if not any(row):
                continue
            try:
                ni = number_column(row, line, default_region)
            except HeaderError as exc:
                raise LeadFileError(
                    f"{path}: {exc} Optional columns: {' / '.join(SUBJECT_COLS)} and {' / '.join(NAME_COLS)}. "
                    f"Nothing was imported.") from None
            if ni is not None:
                cols = (ni, find(row, SUBJECT_COLS), find(row, NAME_COLS), find(row, REGION_COLS),
                        find(row, POSTAL_COLS), find(row, PARTY_COLS))
                continue
            cols = (0, None, None, None, None, None)  # no header: numbers in the first column
        if not any(row):
            continue
        out.rows += 1
        ni, si, nmi, ri, pi, pti = cols
        value = row[ni] if ni < len(row) else ""
        subject = row[si] if si is not None and si < len(row) else ""
        name = row[nmi] if nmi is not None and nmi < len(row) and row[nmi] else None
        party = row[pti] if pti is not None and pti < len(row) and row[pti] else None
        try:
            region = parse_region(row[ri] if ri is not None and ri < len(row) else None)
            postal = parse_postal_code(row[pi] if pi is not None and pi < len(row) else None)
        except LocationError as exc:
            out.rejects.append(Reject(line, value, str(exc)))
            continue
        if party is not None and len(party) > 256:
            out.rejects.append(Reject(line, value, "party id longer than 256 characters"))
            continue
        if not value:
            out.rejects.append(Reject(line, value, "empty number"))
            continue
        info = parse_number(value, default_region)
        if not info.valid:
            out.rejects.append(Reject(line, value, info.problem or "invalid number"))
            continue
        key = (info.e164, subject)
        if key in seen:
            out.duplicates_in_file += 1
            out.rejects.append(Reject(line, value, f"duplicate of an earlier row ({info.e164})"))
            continue
        seen.add(key)
        out.leads.append(Lead(line, info.e164, subject, name, region, postal, party))
    return out


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["line", "value", "why"])
        for r in rejects:
            w.writerow([r.line, r.value, r.why])
