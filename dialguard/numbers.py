"""Phone number normalization, classification and keyed hashing.

Numbers arrive in any human format; the guard works on E.164 and never keeps
a plaintext number in Redis (SPEC §7): keys use an HMAC-SHA256 of the E.164.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo
from phonenumbers import timezone as pn_timezone

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


@lru_cache(maxsize=65536)
def parse_number(raw: str, default_region: str) -> NumberInfo:
    """Normalize and classify; never raises on bad input (the reason says why)."""
    text = (raw or "").strip()
    if not text:
        return NumberInfo(raw, None, None, (), "empty number")
    if len(text) > 40:
        return NumberInfo(raw, None, None, (), "number too long")
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
    if not phonenumbers.is_valid_number(parsed):
        return NumberInfo(raw, None, None, (), "not a valid number for its region")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_number(parsed)
    ntype = phonenumbers.number_type(parsed)
    if ntype in BLOCKED_TYPES:
        return NumberInfo(raw, e164, region, (), f"blocked class: {BLOCKED_TYPES[ntype]}")
    national = str(parsed.national_number)
    try:
        if shortnumberinfo.is_emergency_number(national, region or default_region):
            return NumberInfo(raw, e164, region, (), "emergency number")
    except Exception:  # noqa: BLE001
        pass
    zones = tuple(z for z in pn_timezone.time_zones_for_number(parsed) if z != _UNKNOWN_TZ)
    return NumberInfo(raw, e164, region, zones, None)


def normalize(raw: str, default_region: str) -> str:
    """E.164 or NumberError with the reason; for CLI and imports."""
    info = parse_number(raw, default_region)
    if info.problem:
        raise NumberError(f"{raw!r}: {info.problem}")
    assert info.e164
    return info.e164


def keyed_hash(secret: bytes, value: str, size: int = 16) -> str:
    """HMAC-SHA256, hex, truncated to `size` bytes (128 bits: no practical collisions)."""
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[: size * 2]


def short_hash(value: str) -> str:
    """Stable tag for non-secret names (campaign, agent) used in keys."""
    return hashlib.sha1(value.encode()).hexdigest()[:16]
