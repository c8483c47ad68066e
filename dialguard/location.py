"""Where the callee is: the stated location (`region`, `postal_code`, SPEC §2)
and the US states a number may belong to.

A decision's time rules and state packs apply to the number's candidate zones
and states AND to the stated location, strictest of all. A US ZIP code resolves
to its state and time zone through the `zipcodes` package (pinned in
pyproject.toml: MIT licence; its data is embedded in the wheel and assembled
from unitedstateszipcodes.org, GeoNames and the USPS ZIP Locale Detail, as its
README says; nothing is downloaded at run time). A region without a postal
code counts every zone of that region (Florida: Eastern and, in the western
panhandle, Central).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import geocoder

_REGION = re.compile(r"^([A-Z]{2})(?:-([A-Z0-9]{1,3}))?$")
_ZIP = re.compile(r"^(\d{5})(?:[- ]?\d{4})?$")

# Time zones of every ZIP code of each US state and territory, as the pinned
# `zipcodes` dataset gives them (one unusable entry, "Napakiak" for 99634,
# left out). Kept here so that a region alone needs no data set load;
# tests/unit/test_location.py recomputes it from the package.
US_STATE_ZONES: dict[str, tuple[str, ...]] = {
    "AK": ("America/Adak", "America/Anchorage", "America/Juneau", "America/Metlakatla", "America/Nome",
           "America/Sitka", "America/Yakutat"),
    "AL": ("America/Chicago",),
    "AR": ("America/Chicago",),
    "AS": ("Pacific/Pago_Pago",),
    "AZ": ("America/Denver", "America/Phoenix"),
    "CA": ("America/Los_Angeles",),
    "CO": ("America/Denver",),
    "CT": ("America/New_York",),
    "DC": ("America/New_York",),
    "DE": ("America/New_York",),
    "FL": ("America/Chicago", "America/New_York"),
    "FM": ("Pacific/Chuuk",),
    "GA": ("America/New_York",),
    "GU": ("Pacific/Guam",),
    "HI": ("Pacific/Honolulu",),
    "IA": ("America/Chicago",),
    "ID": ("America/Boise", "America/Los_Angeles"),
    "IL": ("America/Chicago",),
    "IN": ("America/Chicago", "America/Indiana/Indianapolis", "America/Indiana/Knox", "America/Indiana/Marengo",
           "America/Indiana/Petersburg", "America/Indiana/Tell_City", "America/Indiana/Vevay",
           "America/Indiana/Vincennes", "America/Indiana/Winamac", "America/Kentucky/Louisville",
           "America/New_York"),
    "KS": ("America/Chicago", "America/Denver"),
    "KY": ("America/Chicago", "America/Kentucky/Louisville", "America/Kentucky/Monticello", "America/New_York"),
    "LA": ("America/Chicago",),
    "MA": ("America/New_York",),
    "MD": ("America/New_York",),
    "ME": ("America/New_York",),
    "MH": ("Pacific/Majuro",),
    "MI": ("America/Detroit", "America/Menominee"),
    "MN": ("America/Chicago",),
    "MO": ("America/Chicago",),
    "MP": ("Pacific/Saipan",),
    "MS": ("America/Chicago",),
    "MT": ("America/Denver",),
    "NC": ("America/New_York",),
    "ND": ("America/Chicago", "America/Denver", "America/North_Dakota/Beulah", "America/North_Dakota/Center",
           "America/North_Dakota/New_Salem"),
    "NE": ("America/Chicago", "America/Denver"),
    "NH": ("America/New_York",),
    "NJ": ("America/New_York",),
    "NM": ("America/Denver",),
    "NV": ("America/Los_Angeles",),
    "NY": ("America/New_York",),
    "OH": ("America/New_York",),
    "OK": ("America/Chicago",),
    "OR": ("America/Boise", "America/Los_Angeles"),
    "PA": ("America/New_York",),
    "PR": ("America/Puerto_Rico",),
    "PW": ("Pacific/Palau",),
    "RI": ("America/New_York",),
    "SC": ("America/New_York",),
    "SD": ("America/Chicago", "America/Denver"),
    "TN": ("America/Chicago", "America/New_York"),
    "TX": ("America/Chicago", "America/Denver"),
    "UT": ("America/Denver",),
    "VA": ("America/New_York",),
    "VI": ("America/St_Thomas",),
    "VT": ("America/New_York",),
    "WA": ("America/Los_Angeles",),
    "WI": ("America/Chicago",),
    "WV": ("America/New_York",),
    "WY": ("America/Denver",),
}

# phonenumbers' geocoder names a US number's place "City, ST" or by the state's
# name ("Florida", "Washington State", "Washington D.C."): the state it means.
_STATE_NAMES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA", "Colorado": "CO",
    "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID",
    "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA",
    "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN",
    "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV",
    "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY", "North Carolina": "NC",
    "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA",
    "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX",
    "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA", "Washington State": "WA",
    "Washington D.C.": "DC", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
}
# NANP territories phonenumbers gives their own region code: ISO 3166-2 US-xx too.
_US_TERRITORIES = {"PR", "GU", "VI", "AS", "MP"}


class LocationError(ValueError):
    """A region or postal code that is not written as one (the request is refused)."""


def parse_region(value: str | None) -> str | None:
    """An ISO 3166-2 code (US-FL, CN-GD) or a bare ISO 3166-1 country (US), upper-cased."""
    if value is None or not str(value).strip():
        return None
    v = str(value).strip().upper()
    if not _REGION.match(v):
        raise LocationError(f"region {value!r} is not an ISO 3166-2 code (e.g. US-FL, CN-GD)")
    return v


def parse_postal_code(value: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    v = str(value).strip()
    if len(v) > 16 or not re.fullmatch(r"[A-Za-z0-9 -]+", v):
        raise LocationError(f"postal_code {value!r} is not a postal code")
    return v.upper()


@dataclass(frozen=True)
class Place:
    """What the stated location resolves to: US states (two-letter codes), time
    zones, and a problem when part of it could not be placed (the decision then
    denies `unknown_timezone` for the part the rules need)."""

    states: frozenset[str] = frozenset()
    zones: tuple[str, ...] = ()
    problem: str | None = None
    country: str | None = None

    @property
    def empty(self) -> bool:
        return not self.states and not self.zones and self.problem is None


NOWHERE = Place()


def _usable(tz: str) -> bool:
    try:
        ZoneInfo(tz)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


@lru_cache(maxsize=65536)
def zip_place(zip5: str) -> tuple[str, tuple[str, ...]] | None:
    """(state, zones) of a US ZIP code, or None when the data set does not know it."""
    import zipcodes  # its data set is decompressed on first use (warm_up)

    try:
        found = zipcodes.matching(zip5)
    except ValueError:
        return None
    if not found:
        return None
    z = found[0]
    state = z.get("state") or ""
    tz = z.get("timezone") or ""
    if state not in US_STATE_ZONES:
        return None  # military (AA, AE, AP): no state, no zone
    zones = (tz,) if tz and _usable(tz) else US_STATE_ZONES[state]  # unusable zone: the whole state's
    return state, zones


def warm_up() -> None:
    """Decompress the ZIP data set now (about 0.2-1.5 s) rather than in a decision."""
    zip_place("10001")


@lru_cache(maxsize=512)
def country_zones(country: str) -> tuple[str, ...]:
    """Every time zone phonenumbers knows for a country's numbers (a region
    outside the US without finer data: all of them count)."""
    from phonenumbers.tzdata import TIMEZONE_DATA

    cc = phonenumbers.country_code_for_region(country)
    if not cc:
        return ()
    zones: set[str] = set()
    for prefix, zs in TIMEZONE_DATA.items():
        if not prefix.startswith(str(cc)):
            continue
        if cc == 1:  # one calling code, many countries: only this country's area codes
            if len(prefix) != 4 or _nanp_region(prefix) != country:
                continue
        zones.update(z for z in zs if z != "Etc/Unknown")
    return tuple(sorted(zones))


def _nanp_region(prefix: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse("+" + prefix + "5550100"))
    except phonenumbers.NumberParseException:
        return None


@lru_cache(maxsize=4096)
def resolve(region: str | None, postal_code: str | None) -> Place:
    """The stated location. A US ZIP narrows its state's zones to its own; a
    ZIP in another state than the region counts both (strictest of all)."""
    if region is None and postal_code is None:
        return NOWHERE
    country, sub = None, None
    if region:
        m = _REGION.match(region)
        country, sub = m.group(1), m.group(2)
    states: set[str] = set()
    zones: set[str] = set()
    problems: list[str] = []
    by_zip = None
    if postal_code is not None and country in (None, "US"):
        m = _ZIP.match(postal_code)
        by_zip = zip_place(m.group(1)) if m else None
        if by_zip is None:
            problems.append(f"postal code {postal_code} is not a known US ZIP code")
        else:
            states.add(by_zip[0])
            zones.update(by_zip[1])
            country = "US"
    if country == "US" and sub:
        if sub not in US_STATE_ZONES:
            problems.append(f"region {region} is not a US state or territory")
        else:
            states.add(sub)
            if by_zip is None or by_zip[0] != sub:
                zones.update(US_STATE_ZONES[sub])
    elif country == "US" and by_zip is None:  # somewhere in the US: every state counts
        states.update(US_STATE_ZONES)
        zones.update(z for zs in US_STATE_ZONES.values() for z in zs)
    elif country is not None and country != "US":
        cz = country_zones(country)
        if not cz:
            problems.append(f"region {region}: no time zone known for country {country}")
        zones.update(cz)
    return Place(frozenset(states), tuple(sorted(zones)), "; ".join(problems) or None, country)


def _states_of(parsed) -> frozenset[str]:
    region = phonenumbers.region_code_for_number(parsed)
    if region in _US_TERRITORIES:
        return frozenset({region})
    if region != "US":
        return frozenset()
    where = geocoder.description_for_number(parsed, "en")
    if not where:
        return frozenset()
    if where in _STATE_NAMES:
        return frozenset({_STATE_NAMES[where]})
    tail = where.rsplit(", ", 1)[-1] if ", " in where else ""
    return frozenset({tail}) if tail in US_STATE_ZONES else frozenset()


def number_states(e164: str | None) -> frozenset[str]:
    """The US states (or territories) a number's area code places it in; empty
    when the number is not a NANP number of the US or its place is unknown
    (toll-free, non-geographic)."""
    if not e164 or not e164.startswith("+1") or len(e164) != 12:
        return frozenset()
    return _states_of_number(e164)


@lru_cache(maxsize=65536)
def _states_of_number(e164: str) -> frozenset[str]:
    return _states_of(phonenumbers.parse(e164))
