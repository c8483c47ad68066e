"""Read the State Council's yearly holiday notice into a calendar year (SPEC §9).

The notice 国务院办公厅关于YYYY年部分节假日安排的通知 lists, one numbered item
per holiday, the days off (放假, 放假调休, 补休) and the weekend days worked
instead (上班). An operator pastes its text (UTF-8) into
`dialguard calendar import cn FILE`; this module turns it into a
:class:`CalendarFile`. Pure: no I/O.

It accepts the wordings of the notices since 2008 (周X and 星期X, full-width
and half-width punctuation, ranges within a month "10月1日至7日" and across
months "5月31日至6月2日", explicit years "2022年12月31日至2023年1月2日"), and
refuses, naming the line, anything in a holiday item it cannot account for:
an unknown clause, an impossible date, a weekday in parentheses that is not
the date's weekday, a count (共N天) that does not match the days listed, a
working day that is not a weekend day, a day listed twice.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta

from dialguard.calendar_file import CalendarFile, CalendarFileError

CN_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}

# The title gives the year every date without its own year belongs to.
_TITLE = re.compile(r"关于\s*(\d{4})\s*年\s*部分节假日安排")
_YEAR_SENTENCE = re.compile(r"现将\s*(\d{4})\s*年")
# A holiday item: "一、元旦:..." (an ordinal, 、, a name, a colon).
_ITEM = re.compile(r"^\s*[一二三四五六七八九十]{1,3}\s*、\s*([^:]{1,30}?)\s*:\s*(.*)$")
# Outside items, a date written like an item's (with a weekday, or followed by
# 放假/上班/补休) means a holiday item this reader did not recognise.
_STRAY = re.compile(r"\d{1,2}月\d{1,2}日\s*(?:\([^)]*(?:周|星期|礼拜)|放假|上班|补休|调休)")

_DATE = r"(?:(\d{4})年)?(?:(\d{1,2})月)?(\d{1,2})日(?:\(([^)]*)\))?"
_RANGE_SEP = r"(?:至|到|—|–|-|~)"
_SPAN = re.compile(rf"{_DATE}(?:{_RANGE_SEP}{_DATE})?")
# One clause: a list of days or ranges, then what happens on them.
_ACTIONS = ("放假调休", "放假公休", "放假", "补休", "调休", "休息", "上班")
_CLAUSE = re.compile(
    rf"^(?P<days>{_DATE}(?:{_RANGE_SEP}{_DATE})?(?:、{_DATE}(?:{_RANGE_SEP}{_DATE})?)*)"
    rf"(?P<action>{'|'.join(_ACTIONS)})(?:(?P<n>\d{{1,2}})天)?$")
_TOTAL = re.compile(r"^共(\d{1,2})天$")
_LUNAR = re.compile(r"^农历\S+$")


def _normalize(line: str) -> str:
    """Half-width punctuation and digits (NFKC), no spaces; 、 and 。 stay."""
    line = unicodedata.normalize("NFKC", line)
    line = line.replace("，", ",").replace("；", ";").replace("〔", "[").replace("〕", "]")
    return re.sub(r"\s+", "", line)


def _split_top(text: str, seps: str) -> list[str]:
    """text split at any of seps outside parentheses ((农历除夕、周二) stays whole)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")" and depth > 0
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def notice_year(text: str) -> int:
    """The year the notice is about, from its title (or 现将YYYY年...)."""
    norm = _normalize(text)
    m = _TITLE.search(norm) or _YEAR_SENTENCE.search(norm)
    if not m:
        raise CalendarFileError("no year found: the text must include the notice's title "
                                "(国务院办公厅关于YYYY年部分节假日安排的通知)")
    return int(m.group(1))


class _Reader:
    def __init__(self, year: int):
        self.year = year
        self.holidays: dict[date, int] = {}  # day -> line number
        self.working: dict[date, int] = {}
        self.lineno = 0
        self.raw = ""
        self.lines: list[str] = []

    def fail(self, message: str):
        raise CalendarFileError(message, self.lineno, self.raw)

    def day(self, y: str | None, m: str | None, d: str, paren: str | None,
            default_year: int, default_month: int | None) -> date:
        year = int(y) if y else default_year
        if m is None and default_month is None:
            self.fail(f"{d}日 has no month")
        month = int(m) if m else default_month
        try:
            day = date(year, month, int(d))
        except ValueError:
            self.fail(f"{year}年{month}月{d}日 is not a date")
        if paren is not None:
            self.check_paren(day, paren)
        return day

    def check_paren(self, day: date, paren: str) -> None:
        """(周四), (星期一), (农历除夕、周二): every part accounted for, the weekday right."""
        for part in _split_top(paren.replace(",", "、"), "、"):
            w = re.fullmatch(r"(?:周|星期|礼拜)([一二三四五六日天])", part)
            if w:
                want = CN_WEEKDAYS[w.group(1)]
                if day.weekday() != want:
                    self.fail(f"{day.isoformat()} is a {day.strftime('%A')}, not {part}")
            elif not _LUNAR.match(part):
                self.fail(f"cannot read ({paren}) after {day.isoformat()}")

    def spans(self, text: str) -> list[date]:
        """The days of "A至B、C、D至E" in order (a range end inherits year and month)."""
        out: list[date] = []
        year, month = self.year, None
        for part in _split_top(text, "、"):
            m = _SPAN.fullmatch(part)
            if not m:
                self.fail(f"cannot read the days {part!r}")
            y1, m1, d1, p1, y2, m2, d2, p2 = m.groups()
            start = self.day(y1, m1, d1, p1, year, month)
            year, month = start.year, start.month
            if d2 is None:
                out.append(start)
                continue
            end = self.day(y2, m2, d2, p2, year, month)
            if end < start:
                self.fail(f"range ends before it starts: {start.isoformat()} to {end.isoformat()}")
            if (end - start).days > 31:
                self.fail(f"a range of {(end - start).days + 1} days is not a holiday")
            year, month = end.year, end.month
            out.extend(start + timedelta(days=i) for i in range((end - start).days + 1))
        return out

    def add(self, days: list[date], working: bool) -> None:
        for d in days:
            if d in self.holidays or d in self.working:
                self.fail(f"{d.isoformat()} is listed twice")
            if working:
                if d.weekday() < 5:
                    self.fail(f"{d.isoformat()} ({d.strftime('%A')}) is a working day already: "
                              "上班 names weekend days")
                self.working[d] = self.lineno
            else:
                self.holidays[d] = self.lineno

    def item(self, body: str) -> None:
        """One numbered item: clauses separated by , ; 。"""
        off: list[date] = []
        worked = False
        no_makeup = False
        for clause in _split_top(body, ",;。"):
            if not clause:
                continue
            m = _CLAUSE.match(clause)
            if m:
                days = self.spans(m.group("days"))
                if m.group("n") and int(m.group("n")) != len(days):
                    self.fail(f"{m.group('n')}天 but {len(days)} day(s) listed")
                if m.group("action") == "上班":
                    worked = True
                    self.add(days, working=True)
                else:
                    off.extend(days)
                    self.add(days, working=False)
                continue
            t = _TOTAL.match(clause)
            if t:
                if not off:
                    self.fail(f"{clause} before any day off")
                if int(t.group(1)) != len(off):
                    self.fail(f"{clause} but {len(off)} day(s) off listed: "
                              f"{off[0].isoformat()} to {off[-1].isoformat()}")
                continue
            if clause == "与周末连休":  # the day off joins a weekend
                if not off or not any((d + timedelta(days=k)).weekday() >= 5 for d in off for k in (-1, 1)):
                    self.fail("与周末连休 but no day off next to a weekend")
                continue
            if clause == "不调休":  # no make-up working day
                no_makeup = True
                continue
            self.fail(f"cannot account for {clause!r}")
        if not off and not worked:
            self.fail("a holiday item with no day off")
        if no_makeup and worked:
            self.fail("不调休 but a working day (上班) is listed")


def _read(text: str, year: int | None) -> _Reader:
    if not isinstance(text, str):
        raise CalendarFileError("the notice must be text")
    if year is not None:
        try:
            titled = notice_year(text)
        except CalendarFileError:
            titled = year  # items pasted without the title: the caller says which year
        if titled != year:
            raise CalendarFileError(f"the notice is about {titled}, not {year}")
    r = _Reader(year or notice_year(text))
    items = 0
    for r.lineno, r.raw in enumerate(text.splitlines(), start=1):
        line = _normalize(r.raw)
        if not line:
            continue
        m = _ITEM.match(line)
        if m is None:
            if _STRAY.search(line):
                r.fail("looks like a holiday item but is not one (expected '一、元旦:...')")
            continue
        if not re.search(r"\d{1,2}月\d{1,2}日", m.group(2)):
            continue  # a numbered paragraph without dates (none in the notices read so far)
        items += 1
        r.item(m.group(2))
    r.lineno, r.raw = 0, ""
    if not items:
        raise CalendarFileError(f"no holiday items found (lines like '一、元旦:1月1日放假') "
                                f"in the {r.year} notice")
    if not any(d.year == r.year for d in r.holidays):
        raise CalendarFileError(f"the notice names no day off in {r.year}")
    lines = text.splitlines()
    for d, n in sorted((r.holidays | r.working).items()):
        if abs(d.year - r.year) > 1:
            raise CalendarFileError(f"{d.isoformat()} is not next to the notice's year {r.year}",
                                    n, lines[n - 1])
    r.lines = lines
    return r


def parse_cn_notice_years(text: str, year: int | None = None) -> dict[int, CalendarFile]:
    """Every calendar year the notice changes, by year.

    Most notices change their own year only; some also name days of the year
    before (the 2023 notice: 2022年12月31日至2023年1月2日放假). `year` is the
    notice's year when the text has no title.
    """
    r = _read(text, year)
    source = f"国务院办公厅关于{r.year}年部分节假日安排的通知"
    out: dict[int, CalendarFile] = {}
    for y in sorted({d.year for d in r.holidays} | {d.year for d in r.working}):
        out[y] = CalendarFile(
            calendar="CN", year=y,
            holidays=frozenset(d for d in r.holidays if d.year == y),
            working_days=frozenset(d for d in r.working if d.year == y),
            source=source if y == r.year else f"{source} (its days of {y})")
    return out


def parse_cn_notice(text: str, year: int | None = None) -> CalendarFile:
    """The notice's own year as a calendar file.

    A notice that also changes another year (see parse_cn_notice_years) is
    refused here, naming the first line with such a day: importing only part
    of it would leave that year wrong without anyone noticing.
    """
    r = _read(text, year)
    for d, n in sorted((r.holidays | r.working).items(), key=lambda kv: kv[1]):
        if d.year != r.year:
            raise CalendarFileError(
                f"this notice also changes {d.year} ({d.isoformat()}): read it with "
                f"parse_cn_notice_years and import both years", n, r.lines[n - 1])
    return CalendarFile(calendar="CN", year=r.year, holidays=frozenset(r.holidays),
                        working_days=frozenset(r.working),
                        source=f"国务院办公厅关于{r.year}年部分节假日安排的通知")
