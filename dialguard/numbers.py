"""Phone number normalization, classification and keyed hashing.

Numbers arrive in any human format; the guard works on E.164 and never keeps
a plaintext number in Redis (SPEC §7): keys use an HMAC-SHA256 of the E.164.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import lru_cache

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


@dataclass(frozen=True)
class NumberInfo:
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


def _time_zones(parsed, ntype, e164: str) -> tuple[str, ...]:
    """phonenumbers.timezone.time_zones_for_number with the type and E.164 known."""
    if not _pnu.is_number_type_geographical(ntype, parsed.country_code):
        zones = pn_timezone._country_level_time_zones_for_number(parsed)
        return tuple(z for z in zones if z != _UNKNOWN_TZ)
    key = e164[1:1 + _TZ_PREFIX]
    hit = _tz_by_prefix.get(key)
    if hit is None:
        zones = pn_timezone.time_zones_for_geographical_number(parsed)
        hit = tuple(z for z in zones if z != _UNKNOWN_TZ)
        if len(_tz_by_prefix) < 65536:
            _tz_by_prefix[key] = hit
    return hit


@lru_cache(maxsize=65536)
def parse_number(raw: str, default_region: str) -> NumberInfo:
    """Normalize and classify; never raises on bad input (the reason says why)."""
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


@lru_cache(maxsize=16384)
def short_hash(value: str) -> str:
    """Stable tag for non-secret names (campaign, agent) used in keys."""
    return hashlib.sha1(value.encode()).hexdigest()[:16]
