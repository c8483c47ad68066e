"""Where the callee is: the stated location (`region`, `postal_code`, SPEC §2)
and the US states a number may belong to.

A decision's time rules and state packs apply to the number's candidate zones
and states AND to the stated location, strictest of all. A US ZIP code resolves
to its state and time zone through the `zipcodes` package (pinned in
pyproject.toml: MIT licence; its data is embedded in the wheel and assembled
from unitedstateszipcodes.org, GeoNames and the USPS ZIP Locale Detail, as its
README says; nothing is downloaded at run time), kept as a compact table
(_load_zip_table: services read it through a child process at their warm-up). A region without a postal
code counts every zone of that region (Florida: Eastern and, in the western
panhandle, Central).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

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


# The ZIP data set, compact: the pinned `zipcodes` package keeps every field of
# every ZIP code (36 MB in a process once decompressed, bench/zip_memory.py); the
# guard needs the state and the zone. At a service's warm-up a child process
# reads the package and prints "zip,state,zone" lines; this process keeps sorted ZIP numbers (array 'I') and, per ZIP, the index of
# its (state, zones) (array 'H'): about 0.3 MB.
_ZIP_DUMP = """
import sys, zipcodes
out = sys.stdout
for z in zipcodes.list_all():
    out.write(f"{z['zip_code']},{z.get('state') or ''},{z.get('timezone') or ''}\\n")
"""
_zip_table: tuple | None = None


def _load_zip_table(child: bool = False) -> tuple:
    """The table, read once. child: through a child process (a long-running
    service's warm-up: the package's data never enters this process); else in
    this process (a one-shot CLI or classic AGI process: faster, then gone)."""
    global _zip_table
    if _zip_table is None:
        _zip_table = _read_zip_table(child)
    return _zip_table


def _read_zip_table(child: bool) -> tuple:
    import subprocess
    import sys
    from array import array

    text = None
    if child:
        try:
            text = subprocess.run([sys.executable, "-c", _ZIP_DUMP], capture_output=True, text=True, check=True,
                                  timeout=120, env={"PATH": "", "PYTHONPATH": ":".join(sys.path)}).stdout
        except (OSError, subprocess.SubprocessError):  # no child process here: read it in this one
            text = None
    if text is None:
        import zipcodes

        text = "".join(f"{z['zip_code']},{z.get('state') or ''},{z.get('timezone') or ''}\n"
                       for z in zipcodes.list_all())
    places: dict[tuple, int] = {}
    first: dict[int, int] = {}  # a ZIP listed twice: its first entry, as zipcodes.matching()[0]
    usable: dict[str, bool] = {}
    for line in text.splitlines():
        code, state, tz = line.split(",", 2)
        if state not in US_STATE_ZONES:
            first.setdefault(int(code), -1)  # military (AA, AE, AP): no state, no zone
            continue
        ok = usable.get(tz)
        if ok is None:
            ok = usable[tz] = bool(tz) and _usable(tz)
        zones = (tz,) if ok else US_STATE_ZONES[state]  # unusable zone: the whole state's
        first.setdefault(int(code), places.setdefault((state, zones), len(places)))
    codes = sorted(c for c, i in first.items() if i >= 0)
    return array("I", codes), array("H", (first[c] for c in codes)), list(places)


@lru_cache(maxsize=65536)
def zip_place(zip5: str) -> tuple[str, tuple[str, ...]] | None:
    """(state, zones) of a US ZIP code, or None when the data set does not know it."""
    from bisect import bisect_left

    if len(zip5) != 5 or not zip5.isdigit():
        return None
    codes, idx, places = _load_zip_table()
    n = int(zip5)
    i = bisect_left(codes, n)
    if i == len(codes) or codes[i] != n:
        return None
    return places[idx[i]]


def warm_up() -> None:
    """Load the ZIP table now (about 2 s, through a child process) rather than in a decision."""
    _load_zip_table(child=True)


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


def number_states(e164: str | None) -> frozenset[str]:
    """The US states (or territories) a number's area code places it in; empty
    when the number is not a NANP number of the US or its place is unknown
    (toll-free, non-geographic)."""
    if not e164 or not e164.startswith("+1") or len(e164) != 12:
        return frozenset()
    got = _NPA_STATES.get(e164[2:5])
    if got is not None:
        return got
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return frozenset()
    return frozenset({region}) if region in _US_TERRITORIES else frozenset()


# US area code -> the states phonenumbers' geocoder places its numbers in (its
# English descriptions: "City, ST" or the state's name), computed from the
# pinned phonenumbers' data (tests/unit/test_location.py recomputes it): the
# geocoder itself costs about 1 s and 100 MB to load, this table nothing.
# 201 (northern New Jersey) has a few prefixes described in New York: both count.
_NPA_TABLE = {
    "201": "NJ,NY", "202": "DC", "203": "CT", "205": "AL", "206": "WA", "207": "ME", "208": "ID", "209": "CA",
    "210": "TX", "212": "NY", "213": "CA", "214": "TX", "215": "PA", "216": "OH", "217": "IL", "218": "MN",
    "219": "IN", "220": "OH", "223": "PA", "224": "IL", "225": "LA", "227": "MD", "228": "MS", "229": "GA",
    "231": "MI", "234": "OH", "235": "MO", "239": "FL", "240": "MD", "248": "MI", "251": "AL", "252": "NC",
    "253": "WA", "254": "TX", "256": "AL", "260": "IN", "262": "WI", "267": "PA", "269": "MI", "270": "KY",
    "272": "PA", "274": "WI", "276": "VA", "279": "CA", "281": "TX", "283": "OH", "301": "MD", "302": "DE",
    "303": "CO", "304": "WV", "305": "FL", "307": "WY", "308": "NE", "309": "IL", "310": "CA", "312": "IL",
    "313": "MI", "314": "MO", "315": "NY", "316": "KS", "317": "IN", "318": "LA", "319": "IA", "320": "MN",
    "321": "FL", "323": "CA", "324": "FL", "325": "TX", "326": "OH", "327": "AR", "329": "NY", "330": "OH",
    "331": "IL", "332": "NY", "334": "AL", "336": "NC", "337": "LA", "339": "MA", "340": "VI", "341": "CA",
    "346": "TX", "347": "NY", "350": "CA", "351": "MA", "352": "FL", "353": "WI", "360": "WA", "361": "TX",
    "363": "NY", "364": "KY", "369": "CA", "380": "OH", "385": "UT", "386": "FL", "401": "RI", "402": "NE",
    "404": "GA", "405": "OK", "406": "MT", "407": "FL", "408": "CA", "409": "TX", "410": "MD", "412": "PA",
    "413": "MA", "414": "WI", "415": "CA", "417": "MO", "419": "OH", "423": "TN", "424": "CA", "425": "WA",
    "430": "TX", "432": "TX", "434": "VA", "435": "UT", "440": "OH", "442": "CA", "443": "MD", "445": "PA",
    "447": "IL", "448": "FL", "458": "OR", "463": "IN", "464": "IL", "469": "TX", "470": "GA", "472": "NC",
    "475": "CT", "478": "GA", "479": "AR", "480": "AZ", "484": "PA", "501": "AR", "502": "KY", "503": "OR",
    "504": "LA", "505": "NM", "507": "MN", "508": "MA", "509": "WA", "510": "CA", "512": "TX", "513": "OH",
    "515": "IA", "516": "NY", "517": "MI", "518": "NY", "520": "AZ", "530": "CA", "531": "NE", "534": "WI",
    "539": "OK", "540": "VA", "541": "OR", "551": "NJ", "557": "MO", "559": "CA", "561": "FL", "562": "CA",
    "563": "IA", "564": "WA", "567": "OH", "570": "PA", "571": "VA", "572": "OK", "573": "MO", "574": "IN",
    "575": "NM", "580": "OK", "582": "PA", "585": "NY", "586": "MI", "601": "MS", "602": "AZ", "603": "NH",
    "605": "SD", "606": "KY", "607": "NY", "608": "WI", "609": "NJ", "610": "PA", "612": "MN", "614": "OH",
    "615": "TN", "616": "MI", "617": "MA", "618": "IL", "619": "CA", "620": "KS", "623": "AZ", "626": "CA",
    "628": "CA", "629": "TN", "630": "IL", "631": "NY", "636": "MO", "640": "NJ", "641": "IA", "645": "FL",
    "646": "NY", "650": "CA", "651": "MN", "656": "FL", "657": "CA", "659": "AL", "660": "MO", "661": "CA",
    "662": "MS", "667": "MD", "669": "CA", "678": "GA", "680": "NY", "681": "WV", "682": "TX", "686": "VA",
    "689": "FL", "701": "ND", "702": "NV", "703": "VA", "704": "NC", "706": "GA", "707": "CA", "708": "IL",
    "712": "IA", "713": "TX", "714": "CA", "715": "WI", "716": "NY", "717": "PA", "718": "NY", "719": "CO",
    "720": "CO", "724": "PA", "725": "NV", "726": "TX", "727": "FL", "728": "FL", "730": "IL", "731": "TN",
    "732": "NJ", "734": "MI", "737": "TX", "738": "CA", "740": "OH", "743": "NC", "747": "CA", "748": "CO",
    "754": "FL", "757": "VA", "760": "CA", "762": "GA", "763": "MN", "765": "IN", "769": "MS", "770": "GA",
    "771": "DC", "772": "FL", "773": "IL", "774": "MA", "775": "NV", "779": "IL", "781": "MA", "785": "KS",
    "786": "FL", "801": "UT", "802": "VT", "803": "SC", "804": "VA", "805": "CA", "806": "TX", "808": "HI",
    "810": "MI", "812": "IN", "813": "FL", "814": "PA", "815": "IL", "816": "MO", "817": "TX", "818": "CA",
    "820": "CA", "821": "SC", "826": "VA", "828": "NC", "830": "TX", "831": "CA", "832": "TX", "835": "PA",
    "838": "NY", "839": "SC", "840": "CA", "843": "SC", "845": "NY", "847": "IL", "848": "NJ", "850": "FL",
    "854": "SC", "856": "NJ", "857": "MA", "858": "CA", "859": "KY", "860": "CT", "862": "NJ", "863": "FL",
    "864": "SC", "865": "TN", "870": "AR", "872": "IL", "878": "PA", "901": "TN", "903": "TX", "904": "FL",
    "906": "MI", "907": "AK", "908": "NJ", "909": "CA", "910": "NC", "912": "GA", "913": "KS", "914": "NY",
    "915": "TX", "916": "CA", "917": "NY", "918": "OK", "919": "NC", "920": "WI", "925": "CA", "928": "AZ",
    "929": "NY", "930": "IN", "931": "TN", "934": "NY", "936": "TX", "937": "OH", "938": "AL", "940": "TX",
    "941": "FL", "943": "GA", "945": "TX", "947": "MI", "948": "VA", "949": "CA", "951": "CA", "952": "MN",
    "954": "FL", "956": "TX", "959": "CT", "970": "CO", "971": "OR", "972": "TX", "973": "NJ", "975": "MO",
    "978": "MA", "979": "TX", "980": "NC", "983": "CO", "984": "NC", "985": "LA", "986": "ID", "989": "MI",
}
_NPA_STATES = {a: frozenset(v.split(",")) for a, v in _NPA_TABLE.items()}
