"""Imported calendars: operator calendar files (SPEC §9), their versions in Redis,
and until when each calendar is known.

A calendar *version* is self-contained: the full set of imported calendar years
(every calendar, every year) that every node evaluates with. Versions are
numbered 1, 2, ... and never change once stored; one is *active*. Like rules
versions (dialguard/rules_store.py), calendars.lua switches the active version
and writes the audit record (t=admin, action calendar_publish/calendar_activate)
in one step, and decide.lua compares the version a node evaluated with the one
in effect: a node with a stale copy reloads and decides again.

What an imported year means (dialguard/timerules.py applies it):
- CN with the official calendar (mode official_workdays): a listed working day
  is a working day, a listed holiday is not (SPEC section 9: the file's days
  override the packaged data); a day the file does not list keeps chinesecalendar's
  word where it knows the year, else the weekday rule (Monday to Friday working).
  So a file of one corrected day never turns the package's other holidays into
  calling days, and a year chinesecalendar does not know is made known by the
  notice's days.
- any other calendar (mode holidays, a country or a subdivision such as US-LA):
  the listed holidays are added to the `holidays` package's days, the listed
  working days taken out of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import yaml

from dialguard.calendar_file import CalendarFile, CalendarFileError
from dialguard.yamlnodes import first_duplicate, is_null

CODE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
FIELDS = ("calendar", "year", "holidays", "working_days", "source")
MIN_YEAR, MAX_YEAR = 2000, 2100
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# -- the calendar file (SPEC §9) ---------------------------------------------------
def _line(lines: list[str], mark) -> tuple[int, str]:
    n = mark.line + 1
    return n, lines[mark.line] if mark.line < len(lines) else ""


def check_code(code: str) -> str:
    """A calendar code the `holidays` package knows (CN, US, US-LA), upper case; ValueError otherwise."""
    import holidays as pyholidays

    code = str(code).strip().upper()
    if not CODE.match(code):
        raise ValueError(f"calendar {code!r}: expected an ISO 3166-1 code (CN) or a 3166-2 code (US-LA)")
    country, _, subdiv = code.partition("-")
    supported = pyholidays.list_supported_countries()
    if country not in supported:
        raise ValueError(f"calendar {code!r}: no country {country} in the holidays package")
    if subdiv and subdiv not in supported[country]:
        raise ValueError(f"calendar {code!r}: {country} has no subdivision {subdiv} in the holidays package")
    return code


def load_yaml(text: str) -> CalendarFile:
    """A calendar file (SPEC §9) from its YAML text.

    Refuses, with the line, anything it cannot account for: unknown or repeated
    keys, a missing calendar or year, bad dates, dates outside the year, a day
    listed twice or both as holiday and working day, and (CN) working days that
    are not Saturdays or Sundays. Raises CalendarFileError.
    """
    lines = text.splitlines()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        n, t = _line(lines, mark) if mark else (0, "")
        raise CalendarFileError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", n, t) from None
    if root is None:
        raise CalendarFileError("empty file: expected calendar, year, holidays, working_days, source")
    if not isinstance(root, yaml.MappingNode):
        raise CalendarFileError("expected a mapping with calendar, year, holidays, working_days, source",
                                *_line(lines, root.start_mark))
    seen: dict[str, yaml.Node] = {}
    for knode, vnode in root.value:
        key = knode.value if isinstance(knode, yaml.ScalarNode) else None
        if key not in FIELDS:
            raise CalendarFileError(f"unknown key {key!r} (expected {', '.join(FIELDS)})",
                                    *_line(lines, knode.start_mark))
        seen[key] = vnode
    dup = first_duplicate(root)
    if dup is not None:
        raise CalendarFileError(f"key {dup.value!r} given twice", *_line(lines, dup.start_mark))
    for key in ("calendar", "year"):
        if key not in seen:
            raise CalendarFileError(f"missing {key!r}", *_line(lines, root.start_mark))

    def scalar(key: str) -> tuple[str, yaml.Node]:
        node = seen[key]
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            raise CalendarFileError(f"{key}: expected a single value", *_line(lines, node.start_mark))
        return node.value, node

    code, node = scalar("calendar")
    try:
        code = check_code(code)
    except ValueError as exc:
        raise CalendarFileError(str(exc), *_line(lines, node.start_mark)) from None
    ytext, node = scalar("year")
    if not re.fullmatch(r"\d{4}", ytext) or not MIN_YEAR <= int(ytext) <= MAX_YEAR:
        raise CalendarFileError(f"year: {ytext!r} is not a year between {MIN_YEAR} and {MAX_YEAR}",
                                *_line(lines, node.start_mark))
    year = int(ytext)
    source = ""
    if "source" in seen:
        source, _ = scalar("source")

    days: dict[str, list[date]] = {"holidays": [], "working_days": []}
    where: dict[date, tuple[str, int, str]] = {}
    for key in ("holidays", "working_days"):
        node = seen.get(key)
        if node is None or is_null(node):
            continue
        if not isinstance(node, yaml.SequenceNode):
            raise CalendarFileError(f"{key}: expected a list of dates (YYYY-MM-DD)", *_line(lines, node.start_mark))
        for item in node.value:
            n, t = _line(lines, item.start_mark)
            if not isinstance(item, yaml.ScalarNode) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", item.value):
                shown = item.value if isinstance(item, yaml.ScalarNode) else "a list or mapping"
                raise CalendarFileError(f"{key}: {shown!r} is not a date (write YYYY-MM-DD)", n, t)
            try:
                d = date.fromisoformat(item.value)
            except ValueError as exc:
                raise CalendarFileError(f"{key}: {item.value}: {exc}", n, t) from None
            if d.year != year:
                raise CalendarFileError(f"{key}: {d} is not in {year}", n, t)
            if d in where:
                other = where[d][0]
                what = "listed twice" if other == key else f"is both in {other} and in {key}"
                raise CalendarFileError(f"{key}: {d} {what} (first on line {where[d][1]})", n, t)
            if key == "working_days" and code == "CN" and d.weekday() < 5:
                raise CalendarFileError(f"working_days: {d} is a {WEEKDAYS[d.weekday()]}: a make-up working "
                                        "day (调休上班) is a Saturday or Sunday", n, t)
            where[d] = (key, n, t)
            days[key].append(d)
    if not days["holidays"] and not days["working_days"]:
        raise CalendarFileError("no holidays and no working_days: nothing to import", *_line(lines, root.start_mark))
    if code == "CN" and not days["holidays"]:
        raise CalendarFileError("a CN year without holidays cannot be the official calendar",
                                *_line(lines, root.start_mark))
    return CalendarFile(calendar=code, year=year, holidays=frozenset(days["holidays"]),
                        working_days=frozenset(days["working_days"]), source=source)


def read_file(text: str, calendar: str) -> CalendarFile:
    """A calendar file for `dialguard calendar import CODE FILE`: YAML, or for CN the
    State Council's notice text (dialguard/calendar_notice.py), told apart by content
    (a notice has no `calendar:` / `year:` keys and names 月 and 日)."""
    code = check_code(calendar)
    if code == "CN" and not re.search(r"^\s*(calendar|year)\s*:", text, re.M) and "月" in text:
        try:
            from dialguard.calendar_notice import parse_cn_notice  # only for notices
        except ImportError:
            raise CalendarFileError("this looks like the State Council's notice, and this build cannot read "
                                    "notices (no dialguard.calendar_notice): write a calendar file (SPEC §9)") from None
        cf = parse_cn_notice(text)
    else:
        cf = load_yaml(text)
    if cf.calendar != code:
        raise CalendarFileError(f"the file is for calendar {cf.calendar}, not {code}")
    return cf


def describe(cf: CalendarFile) -> list[str]:
    """The days a file holds, one line each with its weekday, for an operator to check."""
    out = [f"{cf.calendar} {cf.year}: {len(cf.holidays)} holiday(s), {len(cf.working_days)} working day(s)"
           + (f" — {cf.source}" if cf.source else "")]
    for d in sorted(cf.holidays | cf.working_days):
        kind = "holiday" if d in cf.holidays else "working day"
        out.append(f"  {d.isoformat()} {WEEKDAYS[d.weekday()]}  {kind}")
    return out


# -- the set of imported years every node evaluates with --------------------------
def _file_json(cf: CalendarFile) -> dict:
    return {"calendar": cf.calendar, "year": cf.year, "holidays": sorted(d.isoformat() for d in cf.holidays),
            "working_days": sorted(d.isoformat() for d in cf.working_days), "source": cf.source}


def _file_of(d: dict) -> CalendarFile:
    return CalendarFile(calendar=str(d["calendar"]), year=int(d["year"]),
                        holidays=frozenset(date.fromisoformat(x) for x in d.get("holidays") or ()),
                        working_days=frozenset(date.fromisoformat(x) for x in d.get("working_days") or ()),
                        source=str(d.get("source") or ""))


@dataclass(frozen=True, eq=False)  # compared by identity: one object per stored version (engine cache keys)
class Calendars:
    """A calendar version: every imported calendar year. version 0: none imported."""

    version: int = 0
    files: tuple[CalendarFile, ...] = ()
    actor: str = ""
    why: str = ""
    at: int = 0  # ms
    _index: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        files = tuple(sorted(self.files, key=lambda f: (f.calendar, f.year)))
        object.__setattr__(self, "files", files)
        self._index.update({(f.calendar, f.year): f for f in files})
        if len(self._index) != len(files):
            raise CalendarFileError("a calendar version holds the same calendar year twice")

    def get(self, code: str, year: int) -> CalendarFile | None:
        return self._index.get((code, year))

    def years(self, code: str) -> list[int]:
        return [f.year for f in self.files if f.calendar == code]

    @property
    def codes(self) -> list[str]:
        return sorted({f.calendar for f in self.files})

    def bundle(self) -> dict:
        cals = [_file_json(f) for f in self.files]
        blob = json.dumps(cals, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return {"hash": hashlib.sha256(blob.encode()).hexdigest()[:16], "calendars": cals}

    @property
    def hash(self) -> str:
        return self.bundle()["hash"]

    def with_file(self, cf: CalendarFile) -> "Calendars":
        """This set with cf in place of the same calendar year (a new, unnumbered set)."""
        return Calendars(0, tuple(f for f in self.files if (f.calendar, f.year) != (cf.calendar, cf.year)) + (cf,))

    @classmethod
    def from_json(cls, text: str | bytes, meta: str | bytes | None = None) -> "Calendars":
        d = json.loads(text)
        m = json.loads(meta) if meta else {}
        return cls(version=int(d["version"]), files=tuple(_file_of(x) for x in d.get("calendars") or ()),
                   actor=m.get("actor") or "", why=m.get("why") or "", at=int(m.get("at") or 0))


NO_CALENDARS = Calendars()


# -- until when a calendar is known (issue 12 item 3) ---------------------------------
def code_of(cal) -> str:
    """The calendar code of a pack's `calendar` (rules.Calendar): CN, US, US-LA."""
    country = cal.country.upper()
    return f"{country}-{cal.subdivision.upper()}" if cal.subdivision else country


@lru_cache(maxsize=1)
def _cn_package_last_year() -> int:
    import chinese_calendar

    return max(d.year for d in chinese_calendar.holidays)


def package_last_year(code: str) -> int | None:
    """The last year the packaged data knows for this calendar: chinesecalendar's
    last year for CN; None for calendars of the `holidays` package, whose rules
    compute every year."""
    return _cn_package_last_year() if code == "CN" else None


def known_until(calendar_code: str, imported: Calendars = NO_CALENDARS) -> date | None:
    """The last day the calendar `calendar_code` is known (CN, US-LA, ...), or None
    when it has no end (a calendar of the `holidays` package, computed for every year).

    It is the 31 December of the package's last covered year (chinesecalendar's for
    CN), extended year by year while the next year is imported (a gap ends it:
    importing 2029 without 2028 leaves 2028 unknown, so the calendar is known until
    the end of 2027). `imported` is the active calendar version (Calendars; its
    `get(code, year)` is all that is read). Pure: no I/O.
    """
    code = calendar_code.upper()
    last = package_last_year(code)
    if last is None:
        return None
    while imported.get(code, last + 1) is not None:
        last += 1
    return date(last, 12, 31)


def calendars_used(policy) -> list:
    """The calendars (rules.Calendar) of a Policy's packs, one per calendar code."""
    seen: dict[str, object] = {}
    for _pack, _hours, cal in policy.time_rules:
        if cal is not None:
            seen.setdefault(code_of(cal), cal)
    return [seen[c] for c in sorted(seen)]


def horizons(policy, imported: Calendars = NO_CALENDARS) -> dict[str, date | None]:
    """calendar code -> known_until for every calendar the policy's packs use."""
    return {code_of(cal): known_until(code_of(cal), imported) for cal in calendars_used(policy)}


# -- the store ----------------------------------------------------------------------
class CalendarStore:
    """Calendar versions in Redis ({P}:{g}:calendars; docs/REDIS.md)."""

    def __init__(self, redis, keys, node: str = "", audit: bool = True):
        self.redis = redis
        self.keys = keys
        self.node = node
        self.audit = audit

    def _tail(self, why: str, who: str | None) -> str:
        from dialguard.ids import actor

        return json.dumps({"actor": who or actor(), "why": why, "at": int(time.time() * 1000), "node": self.node},
                          separators=(",", ":"), ensure_ascii=False)

    async def _call(self, op: str, arg: str, target: str, why: str, who: str | None) -> int:
        from dialguard.decision import scripts
        from dialguard.ids import new_id

        head = json.dumps({"action": f"calendar_{op}", "target": target}, separators=(",", ":"),
                          ensure_ascii=False)
        return int(await scripts.CALENDARS(self.redis, [self.keys.calendars, self.keys.audit],
                                           [op, arg, new_id(), head, self._tail(why, who),
                                            "1" if self.audit else "0"]))

    async def publish(self, cals: Calendars, *, target: str = "", why: str = "",
                      who: str | None = None) -> tuple[int, bool]:
        """Store the set as a new version and make it active. Returns (version, new):
        a set identical to the active one changes nothing."""
        current = await self.current()
        b = cals.bundle()
        if current.version and current.hash == b["hash"]:
            return current.version, False
        body = json.dumps(b, separators=(",", ":"), ensure_ascii=False)
        return await self._call("publish", body, target, why, who), True

    async def import_file(self, cf: CalendarFile, *, why: str = "", who: str | None = None) -> tuple[int, bool]:
        """Publish the active set with this calendar year added (or replaced)."""
        return await self.publish((await self.current()).with_file(cf), target=f"{cf.calendar} {cf.year}",
                                  why=why, who=who)

    async def activate(self, version: int, *, why: str = "", who: str | None = None) -> int:
        """Put a stored version back in effect (roll back or forward)."""
        return await self._call("activate", str(int(version)), f"version {int(version)}", why, who)

    async def active_version(self) -> int:
        v = await self.redis.hget(self.keys.calendars, "active")
        return int(v) if v else 0

    async def get(self, version: int) -> Calendars | None:
        raw, meta = await self.redis.hmget(self.keys.calendars, f"v:{int(version)}", f"m:{int(version)}")
        return Calendars.from_json(raw, meta) if raw else None

    async def current(self) -> Calendars:
        v = await self.active_version()
        return (await self.get(v)) or NO_CALENDARS if v else NO_CALENDARS

    async def history(self) -> list[Calendars]:
        seq = await self.redis.hget(self.keys.calendars, "seq")
        out = []
        for n in range(1, int(seq or 0) + 1):
            v = await self.get(n)
            if v:
                out.append(v)
        return out
