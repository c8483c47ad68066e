"""Phone number normalization, classification and keyed hashing.

Numbers arrive in any human format; the guard works on E.164 and never keeps
a plaintext number in Redis (SPEC §7): keys use an HMAC-SHA256 of the E.164.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, shortnumberinfo
from phonenumbers import phonenumberutil as _pnu
from phonenumbers import timezone as pn_timezone

from dialguard.masking import mask_digits, mask_number  # noqa: F401  (re-exported: the one masking)

# phonenumbers answers this when it cannot tell the zone.
_UNKNOWN_TZ = "Etc/Unknown"

# Number classes that are never dialed by an outbound campaign.
BLOCKED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
    PhoneNumberType.UAN: "universal access",
    PhoneNumberType.PAGER: "pager",
}


class NumberInfo(NamedTuple):
    """What parse_number says of a number."""

    raw: str
    e164: str | None
    region: str | None
    timezones: tuple[str, ...]
    problem: str | None  # why the number is invalid_number, or None

    @property
    def valid(self) -> bool:
        return self.problem is None


class NumberError(ValueError):
    pass


def _emergency_max_digits() -> int | None:
    """The longest emergency number phonenumbers knows in any region (None: unknown).

    Bounded from the patterns themselves (regex width), so a full national
    number longer than this can never be one and the check is skipped.
    """
    try:
        from re import _parser as sre_parse  # noqa: PLC0415
        longest = 0
        for region in shortnumberinfo.SUPPORTED_SHORT_REGIONS:
            md = PhoneMetadata.short_metadata_for_region(region, None)
            if md is None or md.emergency is None or not md.emergency.national_number_pattern:
                continue
            hi = sre_parse.parse(md.emergency.national_number_pattern).getwidth()[1]
            if hi >= 1000:  # unbounded repeat: no useful bound
                return None
            longest = max(longest, hi)
        return longest
    except Exception:  # noqa: BLE001 - no bound: always ask phonenumbers
        return None


_EMERGENCY_MAX = _emergency_max_digits()
_NON_ASCII_DIGIT = re.compile(r"[^0-9]+")
_UNKNOWN = PhoneNumberType.UNKNOWN
_E164 = phonenumbers.PhoneNumberFormat.E164


def _classify(parsed) -> tuple[str | None, int]:
    """(region, number type) in one pass; type UNKNOWN means not valid.

    Equivalent to region_code_for_number + is_valid_number + number_type,
    which would each compute the region and the type again.
    """
    region = _pnu.region_code_for_number(parsed)
    if region is None:
        return None, _UNKNOWN
    cc = parsed.country_code
    md = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
    if md is None or (region != _pnu.REGION_CODE_FOR_NON_GEO_ENTITY
                      and cc != _pnu.country_code_for_valid_region(region)):
        return region, _UNKNOWN
    return region, _pnu._number_type_helper(_pnu.national_significant_number(parsed), md)


# phonenumbers looks a geographical number's zones up by the longest known
# prefix of its E.164 digits, at most this long: the answer depends on those
# digits only, so it is remembered per prefix (a few thousand exist).
_TZ_PREFIX = pn_timezone.TIMEZONE_LONGEST_PREFIX
_tz_by_prefix: dict[str, tuple[str, ...]] = {}


_tz_by_cc: dict[int, tuple[str, ...]] = {}


def _time_zones(parsed, ntype, e164: str, cc: int | None = None) -> tuple[str, ...]:
    """phonenumbers.timezone.time_zones_for_number with the type and E.164 known.
    `parsed` may be None (the fast path: built from the E.164 only when
    phonenumbers must be asked; cc is then given)."""
    cc = parsed.country_code if parsed is not None else cc
    if not _pnu.is_number_type_geographical(ntype, cc):
        # the country-level answer depends on the calling code alone
        hit = _tz_by_cc.get(cc)
        if hit is None:
            numobj = parsed if parsed is not None else _numobj(e164, cc)
            zones = pn_timezone._country_level_time_zones_for_number(numobj)
            hit = _tz_by_cc[cc] = tuple(z for z in zones if z != _UNKNOWN_TZ)
        return hit
    key = e164[1:1 + _TZ_PREFIX]
    hit = _tz_by_prefix.get(key)
    if hit is None:
        numobj = parsed if parsed is not None else _numobj(e164, cc)
        zones = pn_timezone.time_zones_for_geographical_number(numobj)
        hit = tuple(z for z in zones if z != _UNKNOWN_TZ)
        if len(_tz_by_prefix) < 65536:
            _tz_by_prefix[key] = hit
    return hit


def _numobj(e164: str, cc: int) -> phonenumbers.PhoneNumber:
    """The PhoneNumber parse gives for a fast-path E.164 (no leading zero: the
    fast path declines those)."""
    return phonenumbers.PhoneNumber(country_code=cc, national_number=int(e164[1 + len(str(cc)):]))


def parse_number(raw: str, default_region: str) -> NumberInfo:
    """Normalize and classify; never raises on bad input (the reason says why).
    The last 65,536 answers are kept (a number asked about again costs nothing)."""
    return NumberInfo._make(_classified(raw, default_region))


# The cache holds plain tuples: the garbage collector stops tracking a tuple of strings
# (never a tuple subclass such as NumberInfo), so a full cache is not walked by every
# full collection. Kept as NumberInfo, the 65,536 entries were 80 % of what a full
# collection walked: 20-84 ms pauses of the deciding process's event loop, none in
# 80,000 decisions now (bench/gc_pauses.py, 2026-12-05).
_classified = lru_cache(maxsize=65536)(lambda raw, default_region: tuple(_parse_uncached(raw, default_region)))


def _parse_uncached(raw: str, default_region: str) -> NumberInfo:
    """parse_number without the cache."""
    if raw:
        # `+digits` or national digits (nearly every number a dialplan sends):
        # phonenumbers' answer without its free-text parse (fast_e164: the same
        # answer or none; tests/unit/test_fast_numbers.py)
        hit = _fast(raw, default_region)
        if hit is not None:
            e164, problem, region, ntype, cc = hit
            if problem is not None:
                return NumberInfo(raw, e164, region if e164 else None, (), problem)
            return NumberInfo(raw, e164, region, _time_zones(None, ntype, e164, cc), None)
    return parse_with_phonenumbers(raw, default_region)


def parse_with_phonenumbers(raw: str, default_region: str) -> NumberInfo:
    """parse_number through phonenumbers.parse (anything the fast path declines)."""
    text = (raw or "").strip()
    if not text:
        return NumberInfo(raw, None, None, (), "empty number")
    if len(text) > 40:
        return NumberInfo(raw, None, None, (), "number too long")
    if text.isascii():  # for ASCII, str.isdigit() is exactly 0-9
        digits = _NON_ASCII_DIGIT.sub("", text)
    else:
        digits = "".join(ch for ch in text if ch.isdigit())
    # Emergency and short codes are checked on the dialed digits as written.
    if default_region and digits and len(digits) <= 6:
        try:
            if shortnumberinfo.is_emergency_number(digits, default_region):
                return NumberInfo(raw, None, default_region, (), "emergency number")
        except Exception:  # noqa: BLE001 - library edge cases mean "not emergency"
            pass
        return NumberInfo(raw, None, default_region, (), "short code")
    try:
        parsed = phonenumbers.parse(text, default_region or None)
    except phonenumbers.NumberParseException as exc:
        return NumberInfo(raw, None, None, (), f"unparseable: {exc._msg}")
    region, ntype = _classify(parsed)
    if ntype == _UNKNOWN:
        return NumberInfo(raw, None, None, (), "not a valid number for its region")
    e164 = phonenumbers.format_number(parsed, _E164)
    if ntype in BLOCKED_TYPES:
        return NumberInfo(raw, e164, region, (), f"blocked class: {BLOCKED_TYPES[ntype]}")
    national = str(parsed.national_number)
    if _EMERGENCY_MAX is None or len(national) <= _EMERGENCY_MAX:
        try:
            if shortnumberinfo.is_emergency_number(national, region or default_region):
                return NumberInfo(raw, e164, region, (), "emergency number")
        except Exception:  # noqa: BLE001
            pass
    return NumberInfo(raw, e164, region, _time_zones(parsed, ntype, e164), None)


def normalize(raw: str, default_region: str) -> str:
    """E.164 or NumberError with the reason; for CLI and imports."""
    info = parse_number(raw, default_region)
    if info.problem:
        raise NumberError(f"{raw!r}: {info.problem}")
    assert info.e164
    return info.e164


def keyed_hash(secret: bytes, value: str, size: int = 16) -> str:
    """HMAC-SHA256, hex, truncated to `size` bytes (128 bits: no practical collisions)."""
    return hmac.digest(secret, value.encode(), "sha256").hex()[: size * 2]  # one-shot: C all the way


def keyed_hasher(secret: bytes, prefix: str, size: int = 16):
    """keyed_hash(secret, prefix + value, size) as a function of value, for a hot path:
    the key and the prefix absorbed once, a copy of that HMAC state per value
    (1.2 us against 1.8 for the one-shot, which sets the key up again each time
    and, with OpenSSL 3, fetches the algorithm again). Bound to `secret`: another
    secret needs another hasher."""
    copy = hmac.new(secret, prefix.encode(), "sha256").copy
    n = size * 2

    def keyed(value: str) -> str:
        h = copy()
        h.update(value.encode())
        return h.hexdigest()[:n]

    return keyed


@lru_cache(maxsize=16384)
def short_hash(value: str) -> str:
    """Stable tag for non-secret names (campaign, agent) used in keys."""
    return hashlib.sha1(value.encode()).hexdigest()[:16]


# -- the fast path for bulk imports ---------------------------------------------------
#
# A DNC import normalizes millions of rows, nearly all of them already plain
# E.164 (`+` and digits) or national digits of the import's region. For those
# the steps of phonenumbers.parse that look for a number inside free text
# (RFC 3966, extensions, letters, punctuation) change nothing, so fast_e164
# runs only the steps that can: the country code, the IDD and national-prefix
# checks (phonenumbers' own functions) and the same classification as
# parse_number. Whatever it is not sure of (short numbers, leading zeros, an
# IDD, the region's country code written in front, a number short enough to be
# an emergency number) it declines and parse_number decides.
# tests/unit/test_fast_numbers.py checks it against parse_number on random numbers.

_CC_REGIONS = _pnu.COUNTRY_CODE_TO_REGION_CODE
_NO_STRIP = (_pnu.ValidationResult.TOO_SHORT, _pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
             _pnu.ValidationResult.INVALID_LENGTH)
_INVALID = "not a valid number for its region"
_BLOCKED = {t: f"blocked class: {name}" for t, name in BLOCKED_TYPES.items()}


class _Desc:
    """A PhoneNumberDesc as _is_number_matching_desc reads it, compiled once."""

    __slots__ = ("lengths", "full")

    def __init__(self, desc):
        pattern = desc.national_number_pattern if desc is not None else None
        self.full = re.compile(pattern).fullmatch if pattern else None
        self.lengths = frozenset(desc.possible_length) if desc is not None and desc.possible_length else None

    def matches(self, nsn: str) -> bool:
        if self.full is None:
            return False
        if self.lengths is not None and len(nsn) not in self.lengths:
            return False
        return self.full(nsn) is not None


class _Plan:
    """What fast_e164 needs of one region's (or calling code's) metadata."""

    def __init__(self, md):
        self.md = md
        self.cc = md.country_code
        self.cc_str = str(md.country_code)
        self.idd = re.compile(md.international_prefix).match if md.international_prefix else None
        npfp = md.national_prefix_for_parsing
        self.national_prefix = re.compile(npfp).match if npfp else None
        self.leading = re.compile(md.leading_digits).match if md.leading_digits is not None else None
        self.general = _Desc(md.general_desc)
        T = PhoneNumberType
        # the order of phonenumbers' _number_type_helper
        self.special = [(T.PREMIUM_RATE, _Desc(md.premium_rate)), (T.TOLL_FREE, _Desc(md.toll_free)),
                        (T.SHARED_COST, _Desc(md.shared_cost)), (T.VOIP, _Desc(md.voip)),
                        (T.PERSONAL_NUMBER, _Desc(md.personal_number)), (T.PAGER, _Desc(md.pager)),
                        (T.UAN, _Desc(md.uan)), (T.VOICEMAIL, _Desc(md.voicemail))]
        self.special = [(t, d.lengths, d.full) for t, d in self.special if d.full is not None]
        self.fixed = _Desc(md.fixed_line)
        self.mobile = _Desc(md.mobile)
        self.same = md.same_mobile_and_fixed_line_pattern
        self._one = _type_regex(md)
        if self._one is not None:
            self.number_type = self._number_type_one

    def _number_type_one(self, nsn: str) -> int:
        """number_type in one regex call (_type_regex)."""
        m = self._one[0](nsn)
        return _UNKNOWN if m is None else self._one[1][m.lastindex]

    def number_type(self, nsn: str) -> int:
        """phonenumbers' _number_type_helper(nsn, metadata), one pattern at a time
        (the instance's own number_type is _number_type_one when _type_regex could
        build its regex)."""
        if not self.general.matches(nsn):
            return _UNKNOWN
        n = len(nsn)
        for t, lengths, full in self.special:
            if (lengths is None or n in lengths) and full(nsn) is not None:
                return t
        if self.fixed.matches(nsn):
            if self.same or self.mobile.matches(nsn):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same and self.mobile.matches(nsn):
            return PhoneNumberType.MOBILE
        return _UNKNOWN


def _type_regex(md):
    """(fullmatch, types by group index) answering _number_type_helper(nsn, md) for
    a national significant number of ASCII digits in one regex call, or None.

    The same tests in the same order, as one pattern: the general description as
    a lookahead, then one alternative per type in _number_type_helper's order
    (fullmatch takes the first alternative that matches the whole number, as the
    helper returns the first type that matches), fixed line and mobile as the
    helper combines them. A description's possible lengths become a lookahead on
    the length; a description that cannot match (no pattern, or possible length
    -1) is left out. tests/unit/test_fast_numbers.py compares it with
    _number_type_helper on every region."""
    T = PhoneNumberType

    def part(desc):
        """The pattern of a desc as _is_number_matching_desc applies it, or None."""
        if desc is None or not desc.national_number_pattern:
            return None
        pat = desc.national_number_pattern
        if re.compile(pat).groups:  # capturing groups would shift the type's group index
            raise ValueError
        lengths = desc.possible_length or ()
        if any(n < 0 for n in lengths):
            return None
        size = rf"(?=(?:{'|'.join(f'.{{{n}}}' for n in sorted(set(lengths)))})\Z)" if lengths else ""
        return f"{size}(?:{pat})"

    try:
        general = part(md.general_desc)
        if general is None:
            return None
        alts, types = [], [None]
        for t, desc in ((T.PREMIUM_RATE, md.premium_rate), (T.TOLL_FREE, md.toll_free),
                        (T.SHARED_COST, md.shared_cost), (T.VOIP, md.voip), (T.PERSONAL_NUMBER, md.personal_number),
                        (T.PAGER, md.pager), (T.UAN, md.uan), (T.VOICEMAIL, md.voicemail)):
            p = part(desc)
            if p is not None:
                alts.append(f"({p})")
                types.append(t)
        fixed, mobile = part(md.fixed_line), part(md.mobile)
        if md.same_mobile_and_fixed_line_pattern:
            if fixed is not None:
                alts.append(f"({fixed})")
                types.append(T.FIXED_LINE_OR_MOBILE)
        else:
            if fixed is not None:  # fixed line: then mobile too, or fixed line only
                alts.append(rf"(?={fixed}\Z)(?:({mobile})|(.*))" if mobile is not None else f"({fixed})")
                types += [T.FIXED_LINE_OR_MOBILE, T.FIXED_LINE] if mobile is not None else [T.FIXED_LINE]
            if mobile is not None:
                alts.append(f"({mobile})")
                types.append(T.MOBILE)
        if not alts:
            return None
        rx = re.compile(rf"(?={general}\Z)(?:{'|'.join(alts)})", re.DOTALL)
    except (re.error, ValueError, RecursionError, OverflowError):
        return None
    assert rx.groups == len(types) - 1
    return rx.fullmatch, types


_region_plans: dict[str, _Plan | None] = {}
_cc_plans: dict[int, _Plan | None] = {}


def _plan_for_region(region: str) -> _Plan | None:
    try:
        return _region_plans[region]
    except KeyError:
        md = PhoneMetadata.metadata_for_region(region.upper(), None)
        plan = _region_plans[region] = _Plan(md) if md is not None else None
        return plan


def _plan_for_cc(cc: int) -> _Plan | None:
    """The metadata parse uses for a number written with +cc."""
    try:
        return _cc_plans[cc]
    except KeyError:
        md = PhoneMetadata.metadata_for_region_or_calling_code(cc, _pnu.region_code_for_country_code(cc))
        plan = _cc_plans[cc] = _Plan(md) if md is not None else None
        return plan


def warm_plans(region: str) -> bool:
    """Build now the plans the fast path uses for `region`'s numbers, written
    nationally and with +cc (each a few dozen regular expressions compiled:
    15-40 ms of CPU, which the first number of a region otherwise pays on the
    deciding process's event loop while every check behind it waits;
    docs/BENCHMARKS.md, "Stop 16, the check tail"). False for an unknown region."""
    region = region.upper()
    cc = phonenumbers.country_code_for_region(region)
    if not cc:
        return False
    _plan_for_region(region)
    _plan_for_cc(cc)
    return True


def _cc_by_first_three() -> dict[str, tuple[int, int]]:
    """The calling code phonenumbers' _extract_country_code takes from digits that
    start with these three (1 to 9 first): the shortest known 1-, 2- or 3-digit
    prefix, as (code, its length)."""
    out = {}
    for p in range(100, 1000):
        text = str(p)
        for n in (1, 2, 3):
            if int(text[:n]) in _CC_REGIONS:
                out[text] = (int(text[:n]), n)
                break
    return out


_CC3 = _cc_by_first_three()


_single: dict[int, tuple[str, _Plan] | None] = {}


def _single_region(cc: int) -> tuple[str, _Plan] | None:
    """(region, plan) of a calling code with one geographic region, else None."""
    if cc not in _single:
        regions = _CC_REGIONS.get(cc) or ()
        plan = _plan_for_region(regions[0]) if len(regions) == 1 else None
        ok = plan is not None and regions[0] != _pnu.REGION_CODE_FOR_NON_GEO_ENTITY and plan.cc == cc
        _single[cc] = (regions[0], plan) if ok else None
    return _single[cc]


def _classify_nsn(cc: int, nsn: str) -> tuple[str | None, int]:
    """_classify for a number given as calling code and national significant number."""
    one = _single_region(cc)
    if one is not None:
        return one[0], one[1].number_type(nsn)
    regions = _CC_REGIONS.get(cc)
    if not regions:
        return None, _UNKNOWN
    if len(regions) == 1:
        region = regions[0]
    else:  # phonenumbers' _region_code_for_number_from_list
        region = None
        for rc in regions:
            plan = _plan_for_region(rc)
            if plan is None:
                continue
            if plan.leading is not None:
                if plan.leading(nsn):
                    region = rc
                    break
            elif plan.number_type(nsn) != _UNKNOWN:
                region = rc
                break
        if region is None:
            return None, _UNKNOWN
    if region == _pnu.REGION_CODE_FOR_NON_GEO_ENTITY:
        plan = _plan_for_cc(cc)
    else:
        plan = _plan_for_region(region)
        if plan is not None and plan.cc != cc:
            return region, _UNKNOWN
    if plan is None:
        return region, _UNKNOWN
    return region, plan.number_type(nsn)


def fast_e164(raw: str, default_region: str) -> tuple[str | None, str | None] | None:
    """(E.164, problem) exactly as parse_number would say, for `+digits` or national
    digits of `default_region`; None when it is not sure (ask parse_number)."""
    hit = _fast(raw, default_region)
    return None if hit is None else (hit[0], hit[1])


def _fast(raw: str, default_region: str):
    """fast_e164's (E.164, problem) plus the region, the number type and the
    calling code (what parse_number also needs), or None."""
    text = raw.strip()
    if text[:1] == "+":
        digits = text[1:]
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 17 or len(digits) < 8 or digits[0] == "0":
            return None
        found = _CC3.get(digits[:3])
        if found is None:
            return None
        cc, n = found
        nsn = written = digits[n:]
        plan = _plan_for_cc(cc)
    else:
        if not (text.isascii() and text.isdigit()) or len(text) > 17 or len(text) < 7 or not default_region:
            return None
        plan = _plan_for_region(default_region)
        if plan is None or (plan.idd is not None and plan.idd(text)) or text.startswith(plan.cc_str):
            return None
        cc, nsn = plan.cc, text
        written = None
    if plan is None:
        return None
    # parse's national-prefix step, with phonenumbers' own functions (which change
    # nothing unless the prefix pattern matches)
    if plan.national_prefix is not None and plan.national_prefix(nsn):
        _, stripped, did = _pnu._maybe_strip_national_prefix_carrier_code(nsn, plan.md)
        if did and stripped != nsn and _pnu._test_number_length(stripped, plan.md) not in _NO_STRIP:
            nsn = stripped
    size = len(nsn)
    if size < 2 or size > 17 or nsn[0] == "0":
        return None  # too short/long for parse, or a leading zero (italian_leading_zero): let it decide
    if _EMERGENCY_MAX is None or size <= _EMERGENCY_MAX:
        return None
    one = _single[cc] if cc in _single else _single_region(cc)  # _classify_nsn's first step, inline
    if one is not None:
        region, ntype = one[0], one[1].number_type(nsn)
    else:
        region, ntype = _classify_nsn(cc, nsn)
    if ntype == _UNKNOWN:
        return None, _INVALID, None, ntype, cc
    # `+digits` with nothing stripped is its own E.164 (the code has no leading zero)
    e164 = text if nsn is written else f"+{cc}{nsn}"
    return e164, _BLOCKED.get(ntype), region, ntype, cc


def normalize_bulk(raw: str, default_region: str) -> tuple[str | None, str | None]:
    """(E.164, problem) for an import row: the fast path, else parse_number (uncached:
    an import sees each number once)."""
    hit = _fast(raw, default_region)
    if hit is not None:
        return hit[0], hit[1]
    info = parse_with_phonenumbers(raw, default_region)
    return info.e164, info.problem


parse_number.__wrapped__ = _parse_uncached  # the tests compare the uncached answer with phonenumbers'
