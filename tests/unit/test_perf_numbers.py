"""The faster parse_number answers exactly what the straightforward one did.

`reference` is parse_number as it was before the hot path was trimmed (one
phonenumbers call per question); the fast one computes region and type once
and skips the emergency check on numbers longer than any emergency number.
"""

from __future__ import annotations

import random

import phonenumbers
from phonenumbers import shortnumberinfo
from phonenumbers import timezone as pn_timezone

from dialguard import numbers
from dialguard.numbers import BLOCKED_TYPES, NumberInfo, parse_number


def reference(raw: str, default_region: str) -> NumberInfo:
    text = (raw or "").strip()
    if not text:
        return NumberInfo(raw, None, None, (), "empty number")
    if len(text) > 40:
        return NumberInfo(raw, None, None, (), "number too long")
    digits = "".join(ch for ch in text if ch.isdigit())
    if default_region and digits and len(digits) <= 6:
        try:
            if shortnumberinfo.is_emergency_number(digits, default_region):
                return NumberInfo(raw, None, default_region, (), "emergency number")
        except Exception:  # noqa: BLE001
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
    zones = tuple(z for z in pn_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown")
    return NumberInfo(raw, e164, region, zones, None)


def _samples():
    rnd = random.Random(20260311)
    regions = ["US", "CN", "GB", "DE", "FR", "IN", "BR", "AU", "JP", "RU", "CA", "MX", "IM", "JE", "NG", "ZA"]
    out = []
    for region in regions:
        for kind in ("example", "mobile", "premium", "toll_free", "fixed"):
            ex = {"example": phonenumbers.example_number,
                  "mobile": lambda r: phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE),
                  "premium": lambda r: phonenumbers.example_number_for_type(
                      r, phonenumbers.PhoneNumberType.PREMIUM_RATE),
                  "toll_free": lambda r: phonenumbers.example_number_for_type(
                      r, phonenumbers.PhoneNumberType.TOLL_FREE),
                  "fixed": lambda r: phonenumbers.example_number_for_type(
                      r, phonenumbers.PhoneNumberType.FIXED_LINE)}[kind](region)
            if ex is None:
                continue
            e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            nat = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.NATIONAL)
            out += [(e164, region), (nat, region), (e164, "US"), (e164[1:], region)]
            for _ in range(40):  # random neighbours: valid, invalid, other types
                d = list(e164[1:])
                for _ in range(rnd.randrange(1, 4)):
                    d[rnd.randrange(len(d))] = str(rnd.randrange(10))
                if rnd.random() < 0.2:
                    d = d[: rnd.randrange(1, len(d))]
                out.append(("+" + "".join(d), region))
    out += [("911", "US"), ("110", "CN"), ("112", "DE"), ("999", "GB"), ("95588", "CN"), ("", "US"),
            ("abc", "US"), ("1" * 50, "US"), ("+1202555012", "US"), ("+19005550123", "US"),
            ("(202) 555-0123", "US"), ("١٣٨٠٠١٣٨٠٠٠", "CN"), ("+86 138 0013 8000", ""),
            ("13800138000", ""), ("0911", "US"), ("+911", "US"), ("1-1-2", "DE"), ("+800 1234 5678", "US"),
            ("+882 1234 5678", "US"), ("+44 7700 900123", "GB"), ("+1 208 555 0123", "CN")]
    return out


def test_emergency_bound_is_known_and_small():
    assert numbers._EMERGENCY_MAX is not None and 3 <= numbers._EMERGENCY_MAX <= 8


def test_fast_parse_matches_reference():
    samples = _samples()
    assert len(samples) > 2000
    diff = [(raw, region, parse_number.__wrapped__(raw, region), reference(raw, region))
            for raw, region in samples if parse_number.__wrapped__(raw, region) != reference(raw, region)]
    assert not diff, diff[:5]
    problems = {reference(raw, region).problem for raw, region in samples}
    assert {None, "emergency number", "short code", "not a valid number for its region"} <= problems
    assert any(p and p.startswith("blocked class") for p in problems)


def test_time_zone_prefix_cache_matches_phonenumbers():
    """Zones remembered per E.164 prefix (numbers._tz_by_prefix) are phonenumbers'
    answer for every number: random numbers of many countries, each twice (the
    second time from the cache, and after numbers sharing its prefix)."""
    rnd = random.Random(7)
    samples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS)[::3]:
        for t in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            ex = phonenumbers.example_number_for_type(region, t)
            if ex is None:
                continue
            e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            for _ in range(15):
                d = list(e164[1:])
                for _ in range(rnd.randrange(1, 3)):  # often the last digits: same prefix, other number
                    d[rnd.randrange(max(1, len(d) - 6), len(d))] = str(rnd.randrange(10))
                samples.append(("+" + "".join(d), region))
    numbers._tz_by_prefix.clear()
    checked = 0
    for _ in range(2):
        for raw, region in samples:
            info = parse_number.__wrapped__(raw, region)
            if not info.valid:
                continue
            want = tuple(z for z in pn_timezone.time_zones_for_number(phonenumbers.parse(raw, region))
                         if z != "Etc/Unknown")
            assert info.timezones == want, raw
            checked += 1
    assert checked > 1000 and numbers._tz_by_prefix


def test_keyed_hash_is_hmac_sha256():
    import hashlib
    import hmac

    for secret, value in ((b"dev-only-insecure-secret", "n:+8613800138000"), (b"\x00" * 40, "c:+1202"), (b"k", "")):
        assert numbers.keyed_hash(secret, value) == hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]
        assert numbers.keyed_hash(secret, value, 8) == hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:16]
