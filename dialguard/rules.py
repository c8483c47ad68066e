"""Rules files: YAML validated with pydantic, rule packs, and their combination.

A rules file (a "pack") states limits; a campaign may combine several packs and
the strictest wins: every time rule of every pack must pass, every cap applies,
and scalar limits take the smallest value (see `Policy`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, time, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dialguard.yamlnodes import first_duplicate, is_null, load_nodes

PACKS_DIR = Path(__file__).parent / "packs"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Outcomes a cap may take back out of its count once reported: calls that never
# reached the person (Regulation F 1006.14(b)(3)(ii) and similar rules).
MOVABLE_OUTCOMES = ("busy", "failed", "no_answer", "voicemail")

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RulesError(ValueError):
    """A rules file is unusable; the message names the file, the path and the problem."""


def parse_duration(value) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return timedelta(seconds=value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 5m, 24h, 3d)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    """Exactly one of: rolling duration, N local calendar days, campaign lifetime."""

    rolling: timedelta | None = None
    days: int | None = Field(default=None, ge=1, le=366)
    lifetime: bool = False

    @field_validator("rolling", mode="before")
    @classmethod
    def _dur(cls, v):
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _one(self):
        given = sum([self.rolling is not None, self.days is not None, bool(self.lifetime)])
        if given != 1:
            raise ValueError("a window is exactly one of rolling: <duration>, days: <N>, lifetime: true")
        if self.rolling is not None and self.rolling <= timedelta(0):
            raise ValueError("rolling window must be positive")
        return self

    def describe(self) -> str:
        if self.rolling is not None:
            return f"rolling {_fmt_td(self.rolling)}"
        if self.days is not None:
            return f"{self.days} local calendar day(s)"
        return "campaign lifetime"


def _fmt_td(td: timedelta) -> str:
    s = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0 and s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


class Cap(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # party / party_subject: per person (the request's `party`, all their
    # numbers); a request without a party falls back to number / number_subject.
    scope: Literal["number", "number_subject", "number_campaign", "party", "party_subject"] = "number"
    max: int = Field(ge=0, le=1_000_000)
    window: Window
    uncounted_outcomes: tuple[Literal["busy", "failed", "no_answer", "voicemail"], ...] = ()
    note: str | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v):
        if v == "lifetime":
            return {"lifetime": True}
        return v

    @model_validator(mode="after")
    def _lifetime_scope(self):
        if self.window.lifetime and self.scope != "number_campaign":
            raise ValueError("a lifetime window needs scope number_campaign (the campaign's lifetime)")
        return self


def _window_span(w: "Window") -> timedelta:
    """How far back a finite window can look (a day window: N local days, and a
    zone's day may start up to a day before UTC's); a lifetime window: nothing
    here (its log is kept without expiry)."""
    if w.rolling is not None:
        return w.rolling
    if w.days is not None:
        return timedelta(days=w.days + 1)
    return timedelta(0)


class Quiet(_Model):
    """No call within a period after an event; days count the event's day as day 1."""

    scope: Literal["number", "number_subject", "party", "party_subject"] = "number"
    window: Window

    @model_validator(mode="after")
    def _no_lifetime(self):
        if self.window.lifetime:
            raise ValueError("a quiet period cannot be 'lifetime'")
        return self


class AbandonQuiet(_Model):
    abandoned: timedelta | None = None
    amd: timedelta | None = None

    @field_validator("abandoned", "amd", mode="before")
    @classmethod
    def _dur(cls, v):
        return None if v is None else parse_duration(v)


class Interval(_Model):
    start: time
    end: time  # exclusive; 24:00 written as "24:00"
    end_of_day: bool = False

    def contains(self, t: time) -> bool:
        return self.start <= t and (self.end_of_day or t < self.end)


def _parse_interval(text: str) -> Interval:
    m = re.match(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$", str(text))
    if not m:
        raise ValueError(f"not an interval: {text!r} (write e.g. 09:00-18:00)")
    h1, m1, h2, m2 = map(int, m.groups())
    if h2 == 24 and m2 == 0:
        end, eod = time(0, 0), True
    else:
        end, eod = time(h2, m2), False
    start = time(h1, m1)
    if not eod and end <= start:
        raise ValueError(f"interval {text!r} ends before it starts (overnight windows: split them per day)")
    return Interval(start=start, end=end, end_of_day=eod)


class Hours(_Model):
    """Allowed hours per weekday in the callee's local time (half-open intervals)."""

    zone: str = "callee"  # "callee" or an IANA zone for the whole pack
    default_zone: str | None = None  # used when the callee's zone is unknown
    weekly: dict[str, tuple[Interval, ...]]

    @field_validator("zone", "default_zone")
    @classmethod
    def _zone(cls, v):
        if v is None or v == "callee":
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("weekly", mode="before")
    @classmethod
    def _weekly(cls, v):
        if not isinstance(v, dict):
            raise ValueError("weekly must map days (mon..sun, mon-fri, all) to lists of HH:MM-HH:MM")
        # a day named by several keys (`all` and `sun`) gets the hours ALL of them allow
        # (their intersection): never looser than any key naming it (docs/GUIDE.md)
        named: dict[str, list[list[Interval]]] = {d: [] for d in DAYS}
        for key, spans in v.items():
            days = _expand_days(str(key))
            if isinstance(spans, str):
                spans = [spans]
            if not isinstance(spans, list):
                raise ValueError(f"{key}: expected a list of intervals")
            parsed = [_parse_interval(s) for s in spans]
            for d in days:
                named[d].append(parsed)
        out = {}
        for d in DAYS:
            lists = named[d]
            if len(lists) <= 1:
                out[d] = tuple(sorted(lists[0] if lists else [], key=lambda i: i.start))
            else:
                out[d] = _intersect(lists)
        return out

    def intervals(self, weekday: int) -> tuple[Interval, ...]:
        return self.weekly.get(DAYS[weekday], ())


def _secs(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _intersect(lists: list[list[Interval]]) -> tuple[Interval, ...]:
    """The times every list of intervals allows (each list: any of its intervals)."""
    spans = [(_secs(i.start), 86400 if i.end_of_day else _secs(i.end)) for i in lists[0]]
    for other in lists[1:]:
        spans = [(max(s1, _secs(i.start)), min(e1, 86400 if i.end_of_day else _secs(i.end)))
                 for s1, e1 in spans for i in other]
        spans = [(s, e) for s, e in spans if s < e]

    def at(s: int) -> time:
        return time(s // 3600, s % 3600 // 60, s % 60)
    return tuple(Interval(start=at(s), end=time(0) if e == 86400 else at(e), end_of_day=e == 86400)
                 for s, e in sorted(set(spans)))


def _expand_days(key: str) -> list[str]:
    key = key.strip().lower()
    if key in ("all", "daily"):
        return list(DAYS)
    if "-" in key:
        a, b = key.split("-", 1)
        if a not in DAYS or b not in DAYS:
            raise ValueError(f"unknown day range {key!r}")
        i, j = DAYS.index(a), DAYS.index(b)
        return [DAYS[(i + k) % 7] for k in range((j - i) % 7 + 1)]
    if key not in DAYS:
        raise ValueError(f"unknown day {key!r} (use mon..sun, mon-fri, all)")
    return [key]


class Calendar(_Model):
    country: str = Field(min_length=2, max_length=3)
    subdivision: str | None = None
    # official_workdays: mainland China's official calendar with make-up working
    # days; holidays: deny on public holidays (weekends follow `hours`).
    mode: Literal["official_workdays", "holidays"] = "holidays"
    # A year the calendar data does not know (SPEC §3): deny (`holiday`), allow
    # every day, or weekdays: estimate Monday to Friday as working days (the
    # pack's hours apply); decisions taken on an estimate are marked in the audit.
    unknown_year: Literal["deny", "allow", "weekdays"] = "deny"

    @model_validator(mode="after")
    def _mode(self):
        if self.mode == "official_workdays" and self.country.upper() != "CN":
            raise ValueError("mode official_workdays is defined for country CN only")
        if self.mode == "holidays":
            _check_holiday_calendar(self.country.upper(), self.subdivision)
        return self


def _check_holiday_calendar(country: str, subdivision: str | None) -> None:
    """Refuse a calendar the `holidays` package does not have, when the pack is
    loaded rather than on every call. Loading the country's module here also
    keeps its one-time import cost (about 0.1 s) out of the first decision."""
    import holidays

    try:
        holidays.country_holidays(country, subdiv=subdivision)
    except NotImplementedError:
        where = f"{country}-{subdivision}" if subdivision else country
        known = ""
        if subdivision and country in holidays.list_supported_countries():
            known = f" (subdivisions: {', '.join(holidays.list_supported_countries()[country])})"
        raise ValueError(f"no holiday calendar for {where} in the holidays package{known}") from None


HEALTH_METRICS = ("consecutive_rejections", "rejection_rate", "short_answer_rate", "answer_rate_vs_pool",
                  "complaints_per_1000", "optouts_per_1000")


class HealthRule(_Model):
    """One caller-ID health rule: when `metric` crosses `threshold` over the
    window (and the window holds at least `min_calls` calls), the caller ID
    cools down for `cool_down`. Every metric triggers at >= threshold except
    answer_rate_vs_pool, which triggers when the caller ID's answer rate is
    below `threshold` times the median of its pool (strictly below).
    complaints_per_1000 / optouts_per_1000: complaints (opt-outs) on numbers
    whose last allowed call presented the caller ID, per 1,000 of its calls in
    the window; checked when an outcome or such an event arrives."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    metric: Literal["consecutive_rejections", "rejection_rate", "short_answer_rate", "answer_rate_vs_pool",
                    "complaints_per_1000", "optouts_per_1000"]
    threshold: float = Field(gt=0, le=1_000_000)
    min_calls: int = Field(default=0, ge=0, le=100_000)
    cool_down: timedelta
    note: str | None = None

    @field_validator("cool_down", mode="before")
    @classmethod
    def _dur(cls, v):
        return parse_duration(v)

    @model_validator(mode="after")
    def _sane(self):
        if self.cool_down <= timedelta(0):
            raise ValueError("cool_down must be positive")
        if self.metric in ("rejection_rate", "short_answer_rate") and self.threshold > 1:
            raise ValueError(f"{self.metric} is a fraction: threshold must be in (0, 1]")
        if self.metric == "consecutive_rejections" and self.threshold != int(self.threshold):
            raise ValueError("consecutive_rejections needs a whole number")
        if self.metric in ("complaints_per_1000", "optouts_per_1000") and self.threshold > 1000:
            raise ValueError(f"{self.metric} counts per 1,000 calls: threshold must be in (0, 1000]")
        return self


class CallerIdHealth(_Model):
    """Caller-ID health from reported outcomes (dialguard/callerid_health.py).

    Figures cover the last `window_calls` outcomes that are also within the last
    `window_hours`. A carrier rejection is an unanswered call whose SIP code is
    in `rejection_sip_codes`, or, when the trunk gave no SIP code, whose Q.850
    cause is in `rejection_causes` (a busy callee, 17 / SIP 486, never is)."""

    window_calls: int = Field(default=100, ge=1, le=1000)
    window_hours: int = Field(default=24, ge=1, le=24 * 31)
    short_answer_s: int = Field(default=5, ge=1, le=600)
    rejection_sip_codes: tuple[int, ...] = (403, 603, 608)
    rejection_causes: tuple[int, ...] = (21,)
    rules: tuple[HealthRule, ...] = ()

    @field_validator("rejection_sip_codes")
    @classmethod
    def _sip(cls, v):
        for c in v:
            if not 400 <= c <= 699:
                raise ValueError(f"{c} is not a SIP failure code (400-699)")
            if c in (486, 600):
                raise ValueError(f"{c} means the callee is busy, not a carrier rejection")
        return v

    @field_validator("rejection_causes")
    @classmethod
    def _q850(cls, v):
        for c in v:
            if not 1 <= c <= 127:
                raise ValueError(f"{c} is not a Q.850 cause (1-127)")
            if c in (16, 17):
                raise ValueError(f"Q.850 {c} is a normal clearing or a busy callee, not a carrier rejection")
        return v

    @model_validator(mode="after")
    def _unique(self):
        ids = [r.id for r in self.rules]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate health rule id(s): {', '.join(sorted(dup))}")
        for r in self.rules:
            if r.min_calls > self.window_calls:
                raise ValueError(f"health rule {r.id}: min_calls {r.min_calls} exceeds window_calls "
                                 f"{self.window_calls} (it could never trigger)")
        return self


class CallerIdRules(_Model):
    require_approved: bool = True
    pool: tuple[str, ...] = ()
    per_minute: int | None = Field(default=None, ge=0)
    per_hour: int | None = Field(default=None, ge=0)
    per_day: int | None = Field(default=None, ge=0)  # call-centre local day
    concurrency: int | None = Field(default=None, ge=0)
    returnable: bool = False  # a caller ID must be presented (never withheld)
    health: CallerIdHealth | None = None


class AgentRules(_Model):
    per_day: int | None = Field(default=None, ge=0)  # call-centre local day


class RatePolicy(_Model):
    """A limit tracked by the dialer (e.g. abandon rate); stated, not per-call."""

    max_pct: float = Field(ge=0, le=100)
    period: timedelta
    base: str = "live_answered"
    # an abandoned call must hear a recorded message naming the seller (us-tcpa, uk-ofcom):
    # the dialer dials no campaign of this pack without a message of its own
    message_required: bool = False

    @field_validator("period", mode="before")
    @classmethod
    def _dur(cls, v):
        return parse_duration(v)


class Pack(_Model):
    pack: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = "1"
    title: str = ""
    sources: tuple[str, ...] = ()
    default_region: str | None = None
    hours: Hours | None = None
    calendar: Calendar | None = None
    caps: tuple[Cap, ...] = ()
    min_interval: timedelta | None = None
    quiet_after_conversation: Quiet | None = None
    quiet_after_abandon: AbandonQuiet | None = None
    agent: AgentRules | None = None
    caller_id: CallerIdRules | None = None
    max_duration_s: int | None = Field(default=None, ge=0)
    consent_required: bool = False
    abandon_rate: RatePolicy | None = None
    # A pack by state (`us-states`): per call, the packs of every US state the
    # callee may be in (from the number and the stated region / postal code)
    # are added to the rules; `unplaced`: when no state is known (toll-free
    # number, no location), every listed state's packs apply (fail closed).
    states: dict[str, tuple[str, ...]] = {}
    unplaced: Literal["all", "none"] = "all"
    notes: tuple[str, ...] = ()

    @field_validator("states", mode="before")
    @classmethod
    def _states(cls, v):
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("states must map two-letter state codes to pack names")
        out = {}
        for k, packs in v.items():
            code = str(k).strip().upper()
            if not re.fullmatch(r"[A-Z]{2}", code):
                raise ValueError(f"states: {k!r} is not a two-letter state code")
            packs = [packs] if isinstance(packs, str) else list(packs or [])
            for name in packs:
                if not is_shipped(name):  # a name, never a path: loaded from the package's packs only
                    raise ValueError(f"states: {code}: {name!r} is not a shipped rule pack "
                                     f"(shipped: {', '.join(shipped_packs())})")
            out[code] = tuple(packs)
        return out

    @field_validator("min_interval", mode="before")
    @classmethod
    def _dur(cls, v):
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _unique_caps(self):
        ids = [c.id for c in self.caps]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate cap id(s): {', '.join(sorted(dup))}")
        return self


def _loc(loc) -> str:
    return ".".join(str(p) for p in loc) or "(top)"


def load_pack_file(path: str | Path) -> Pack:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8 text") from None
    return load_pack_text(text, str(path))


def load_pack_text(text: str, origin: str) -> Pack:
    """A pack from its YAML text; `origin` names it in errors (a file, a stored version).

    Refused, with the line: a key given twice anywhere (YAML would keep the last one:
    a second `hours:` or `caps: []` would silently replace the first), and a top-level
    key with an explicit null (`hours:` with nothing under it would be no hours rule)."""
    try:
        root, data = load_nodes(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise RulesError(f"{origin}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{origin}: (top): expected a mapping of rule settings")
    dup = first_duplicate(root)
    if dup is not None:
        raise RulesError(f"{origin}: line {dup.start_mark.line + 1}: key {dup.value!r} given twice "
                         f"(only one may be: YAML would silently keep the last)")
    for knode, vnode in root.value:
        if is_null(vnode):
            raise RulesError(f"{origin}: line {knode.start_mark.line + 1}: {knode.value}: no value; an empty "
                             f"section is refused, not read as no rule (remove the key, or give its rules)")
    try:
        return Pack.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RulesError(f"{origin}: {problems}") from None


def pack_source(ref: str, base_dir: Path | None = None) -> tuple[str, str]:
    """(origin, YAML text) of a shipped pack name or a rules file, for storing a
    rules version that every node loads the same way whatever its files."""
    ref = ref.strip()
    shipped = PACKS_DIR / f"{ref}.yaml"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", ref) and shipped.exists():
        path = shipped
    else:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            raise RulesError(f"{ref}: no such rule pack (shipped: {', '.join(shipped_packs())}) and no such file")
    try:
        return ref, path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8 text") from None


def shipped_packs() -> list[str]:
    return sorted(p.stem for p in PACKS_DIR.glob("*.yaml"))


SHIPPED_NAME = re.compile(r"[a-z0-9-]+")


def is_shipped(name) -> bool:
    """A shipped pack's name (`cn-default`): lower-case letters, digits and hyphens, and one
    of shipped_packs(). Checked by its form first, so no path ever reaches the file system."""
    return isinstance(name, str) and SHIPPED_NAME.fullmatch(name) is not None and name in shipped_packs()


def shipped_spec(spec: str) -> str:
    """Comma-separated shipped pack names (what the console and the API accept as a
    campaign's own packs: never a file path, which would be read on the server), normalized
    (`cn-default,cn-carrier`). RulesError names what is refused and what is allowed."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if isinstance(spec, str) else []
    bad = [n for n in names if not is_shipped(n)]
    if bad or not names:
        what = "no rule pack given"
        if bad:
            what = f"{', '.join(repr(n[:80]) for n in bad)}: not " + (
                "a shipped rule pack" if len(bad) == 1 else "shipped rule packs")
        raise RulesError(f"{what}. A campaign's own packs are shipped pack names, comma-separated, never a file: "
                         f"{', '.join(shipped_packs())}")
    return ",".join(names)


@lru_cache(maxsize=64)
def _shipped(name: str) -> Pack:
    return load_pack_file(PACKS_DIR / f"{name}.yaml")


def resolve_pack(ref: str, base_dir: Path | None = None) -> Pack:
    """A shipped pack name or a path to a rules file."""
    ref = ref.strip()
    shipped = PACKS_DIR / f"{ref}.yaml"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", ref) and shipped.exists():
        return load_pack_file(shipped)
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.exists():
        return load_pack_file(path)
    raise RulesError(f"{ref}: no such rule pack (shipped: {', '.join(shipped_packs())}) and no such file")


class Policy:
    """Several packs combined; the strictest wins."""

    def __init__(self, packs: list[Pack]):
        if not packs:
            raise RulesError("no rule pack given")
        self.packs = tuple(packs)
        if any(p.states for p in self.packs):
            self.state_packs  # noqa: B018 - load the state packs now, not in a decision

    @classmethod
    def load(cls, refs, base_dir: Path | None = None) -> "Policy":
        if isinstance(refs, str):
            refs = [r for r in refs.split(",") if r.strip()]
        return cls([resolve_pack(r, base_dir) for r in refs])

    @classmethod
    def from_sources(cls, sources: list[tuple[str, str]]) -> "Policy":
        """Packs from (origin, YAML text) pairs: a stored rules version."""
        return cls([load_pack_text(text, origin) for origin, text in sources])

    @cached_property
    def state_packs(self) -> dict[str, tuple[Pack, ...]]:
        """State code -> the packs a `states` pack applies for it (empty: none)."""
        out: dict[str, list[Pack]] = {}
        for p in self.packs:
            for code, names in p.states.items():
                out.setdefault(code, []).extend(_shipped(n) for n in names)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _unplaced_all(self) -> bool:
        return any(p.states and p.unplaced == "all" for p in self.packs)

    def for_states(self, states: frozenset[str]) -> "Policy":
        """These rules with the packs of the states the callee may be in added
        (a `states` pack); the same object when there is none. Cached per state
        set: the engine's plan templates and time cache key on the object."""
        sp = self.state_packs
        if not sp:
            return self
        hit = self._by_states.get(states)
        if hit is not None:
            return hit
        picked = [c for c in sorted(states) if c in sp]
        if not states and self._unplaced_all:
            picked = sorted(sp)
        have = {p.pack for p in self.packs}
        extra: list[Pack] = []
        for code in picked:
            for p in sp[code]:
                if p.pack not in have:
                    have.add(p.pack)
                    extra.append(p)
        derived = Policy(list(self.packs) + extra) if extra else self
        if derived is not self:
            # the same rules version: the states applied are in the audit record
            derived.__dict__["version_hash"] = self.version_hash
            derived.__dict__["state_packs"] = {}
        if len(self._by_states) >= 1024:
            self._by_states.clear()
        self._by_states[states] = derived
        return derived

    @cached_property
    def _by_states(self) -> dict:
        return {}

    @cached_property
    def name(self) -> str:
        return "+".join(p.pack for p in self.packs)

    @cached_property
    def version_hash(self) -> str:
        blob = "\n".join(p.model_dump_json() for p in self.packs)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @cached_property
    def caps(self) -> list[tuple[str, Cap]]:
        return [(p.pack, c) for p in self.packs for c in p.caps]

    @cached_property
    def time_rules(self) -> list[tuple[str, Hours | None, Calendar | None]]:
        return [(p.pack, p.hours, p.calendar) for p in self.packs if p.hours or p.calendar]

    @cached_property
    def min_interval(self) -> timedelta | None:
        vals = [p.min_interval for p in self.packs if p.min_interval]
        return max(vals) if vals else None

    @cached_property
    def quiet_after_conversation(self) -> list[Quiet]:
        return [p.quiet_after_conversation for p in self.packs if p.quiet_after_conversation]

    @cached_property
    def abandon_quiet(self) -> tuple[timedelta | None, timedelta | None]:
        ab = [p.quiet_after_abandon.abandoned for p in self.packs
              if p.quiet_after_abandon and p.quiet_after_abandon.abandoned]
        amd = [p.quiet_after_abandon.amd for p in self.packs
               if p.quiet_after_abandon and p.quiet_after_abandon.amd]
        return (max(ab) if ab else None, max(amd) if amd else None)

    @cached_property
    def abandon_limits(self) -> list[tuple[str, RatePolicy]]:
        """Every pack's abandon-rate limit (each over its own period: all must hold)."""
        return [(p.pack, p.abandon_rate) for p in self.packs if p.abandon_rate]

    @cached_property
    def abandon_message_packs(self) -> list[str]:
        """Packs whose abandoned calls must hear a lawful message (naming the seller)."""
        return [p.pack for p in self.packs if p.abandon_rate and p.abandon_rate.message_required]

    @cached_property
    def agent_per_day(self) -> int | None:
        vals = [p.agent.per_day for p in self.packs if p.agent and p.agent.per_day is not None]
        return min(vals) if vals else None

    def _cid_min(self, field: str) -> int | None:
        vals = [getattr(p.caller_id, field) for p in self.packs
                if p.caller_id and getattr(p.caller_id, field) is not None]
        return min(vals) if vals else None

    @cached_property
    def caller_id_limits(self) -> dict[str, int | None]:
        return {f: self._cid_min(f) for f in ("per_minute", "per_hour", "per_day", "concurrency")}

    @cached_property
    def caller_id_required(self) -> bool:
        """A call must present an approved caller ID: one with none given and no pool to
        pick from is denied. (A caller ID that is presented is checked whatever this says.)"""
        return any(p.caller_id and p.caller_id.require_approved for p in self.packs)

    @cached_property
    def caller_id_pool(self) -> tuple[str, ...]:
        pools = [p.caller_id.pool for p in self.packs if p.caller_id and p.caller_id.pool]
        if not pools:
            return ()
        keep = set(pools[0]).intersection(*pools[1:])
        return tuple(c for c in pools[0] if c in keep)

    @cached_property
    def caller_id_health(self) -> list[tuple[str, CallerIdHealth]]:
        """Every pack's health settings: each pack's rules apply over its own
        windows (the strictest wins: any rule of any pack may cool a number down)."""
        return [(p.pack, p.caller_id.health) for p in self.packs if p.caller_id and p.caller_id.health]

    @cached_property
    def max_duration_s(self) -> int:
        vals = [p.max_duration_s for p in self.packs if p.max_duration_s]
        return min(vals) if vals else 0

    @cached_property
    def consent_required(self) -> bool:
        return any(p.consent_required for p in self.packs)

    @cached_property
    def default_region(self) -> str | None:
        for p in self.packs:
            if p.default_region:
                return p.default_region
        return None

    def retention(self) -> timedelta:
        """How long the logs must be kept (_retention), computed once: read at every outcome."""
        return self._retention

    @cached_property
    def retention_ms(self) -> int:
        return int(self._retention.total_seconds() * 1000)

    @cached_property
    def _retention(self) -> timedelta:
        """How long the attempt, conversation and abandon logs must be kept to
        answer every finite window of these rules: each cap's, the minimum
        interval, every quiet period (after a conversation, an abandoned call, an
        answering machine) and the agent's day, plus an hour. Lifetime caps are
        not in it: their logs are never trimmed nor expired (lifetime_scopes)."""
        spans = [timedelta(days=2)]
        for _, cap in self.caps:
            spans.append(_window_span(cap.window))
        spans += [_window_span(q.window) for q in self.quiet_after_conversation]
        spans += [d for d in (self.min_interval, *self.abandon_quiet) if d]
        return max(spans) + timedelta(hours=1)

    @cached_property
    def lifetime_scopes(self) -> frozenset[str]:
        """The scopes of the caps counted over the campaign's lifetime: their logs
        must outlive every retention (a lifetime cap never lifts by waiting)."""
        return frozenset(cap.scope for _, cap in self.caps if cap.window.lifetime)
