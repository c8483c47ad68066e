"""Where the callee is: region / postal code resolution (dialguard/location.py),
the states of a number, and the `us-states` pack's per-call choice of packs."""

from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from dialguard import location as L
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, RulesError, load_pack_text


def test_state_zone_table_is_the_pinned_data_sets():
    """US_STATE_ZONES, kept in the module so a region needs no data set load,
    equals what the pinned zipcodes package gives (unusable zones left out)."""
    import zipcodes

    got = defaultdict(set)
    for z in zipcodes.list_all():
        tz = z["timezone"]
        if not tz:
            continue
        try:
            ZoneInfo(tz)
        except Exception:  # noqa: BLE001 - the one bad entry ("Napakiak")
            continue
        got[z["state"]].add(tz)
    assert {k: tuple(sorted(v)) for k, v in got.items()} == L.US_STATE_ZONES


@pytest.mark.parametrize("region,postal,states,zones", [
    ("US-FL", None, {"FL"}, ("America/Chicago", "America/New_York")),     # the panhandle keeps Central
    ("US-FL", "32501", {"FL"}, ("America/Chicago",)),                      # Pensacola narrows it
    ("US-FL", "33101", {"FL"}, ("America/New_York",)),                     # Miami
    (None, "33101-1234", {"FL"}, ("America/New_York",)),                   # ZIP+4, no region
    ("US-FL", "10001", {"FL", "NY"}, ("America/Chicago", "America/New_York")),  # disagreeing: both count
    ("US-TX", None, {"TX"}, ("America/Chicago", "America/Denver")),        # El Paso is Mountain
    ("US-MS", None, {"MS"}, ("America/Chicago",)),
    ("US-AK", "99634", {"AK"}, L.US_STATE_ZONES["AK"]),                    # the data's unusable zone: whole state
    ("CN-GD", None, set(), ("Asia/Shanghai",)),
])
def test_resolve(region, postal, states, zones):
    p = L.resolve(L.parse_region(region), L.parse_postal_code(postal))
    assert p.states == frozenset(states) and p.zones == tuple(zones) and p.problem is None


def test_resolve_problems_and_nothing():
    assert L.resolve(None, None) is L.NOWHERE
    assert "not a known US ZIP" in L.resolve(None, "00000").problem and not L.resolve(None, "00000").zones
    assert "not a US state" in L.resolve("US-ZZ", None).problem
    assert "no time zone" in L.resolve("ZZ-AB", None).problem
    # an unknown ZIP with a region: the region's zones still count, the problem is said
    p = L.resolve("US-LA", "00000")
    assert p.zones == ("America/Chicago",) and p.problem
    # somewhere in the US: every state and zone (strictest)
    us = L.resolve("US", None)
    assert us.states == frozenset(L.US_STATE_ZONES) and "Pacific/Honolulu" in us.zones


def test_canada_region_counts_only_canadian_zones():
    zones = L.resolve("CA-ON", None).zones
    assert "America/Toronto" in zones and "America/New_York" not in zones and "Pacific/Honolulu" not in zones


@pytest.mark.parametrize("e164,states", [
    ("+12125550123", {"NY"}), ("+13055550123", {"FL"}), ("+12025550123", {"DC"}),
    ("+13605550100", {"WA"}), ("+15045550100", {"LA"}), ("+16015550100", {"MS"}), ("+14695550100", {"TX"}),
    ("+17875550123", {"PR"}), ("+18005550123", set()), ("+14165550123", set()), ("+442071234567", set()),
    (None, set()),
])
def test_number_states(e164, states):
    assert L.number_states(e164) == frozenset(states)


@pytest.mark.parametrize("bad", ["Florida", "US_FL", "usa-fl", "US-FLORIDA"])
def test_bad_region_refused(bad):
    with pytest.raises(ValidationError, match="region"):
        DecisionRequest(number="+12125550123", campaign="c", agent="a", region=bad)


@pytest.mark.parametrize("bad", ["33101;DROP", "x" * 17, "331<01"])
def test_bad_postal_code_refused(bad):
    with pytest.raises(ValidationError, match="postal_code"):
        DecisionRequest(number="+12125550123", campaign="c", agent="a", postal_code=bad)


def test_request_normalizes_location():
    r = DecisionRequest(number="+1", campaign="c", agent="a", region=" us-fl ", postal_code=" 33101 ", party="")
    assert (r.region, r.postal_code, r.party) == ("US-FL", "33101", None)


def test_us_states_picks_the_packs_of_the_states_given():
    pol = Policy.load(["us-tcpa", "us-states"])
    assert pol.for_states(frozenset({"NY"})) is pol                      # no pack for New York
    fl_ny = pol.for_states(frozenset({"FL", "NY"}))
    assert [p.pack for p in fl_ny.packs] == ["us-tcpa", "us-states", "us-fl-ftsa"]
    assert fl_ny is pol.for_states(frozenset({"NY", "FL"}))               # cached per state set
    assert fl_ny.version_hash == pol.version_hash                         # the same rules version
    assert {c.id for _, c in fl_ny.caps} == {"three-per-24h-same-subject"}
    every = pol.for_states(frozenset())                                    # placed nowhere: all (fail closed)
    assert {p.pack for p in every.packs} >= {"us-al", "us-fl-ftsa", "us-la", "us-md", "us-ms", "us-ok", "us-tx",
                                             "us-wa"}
    assert Policy.load(["us-tcpa"]).for_states(frozenset({"FL"})).name == "us-tcpa"


def test_states_pack_unplaced_none_and_bad_entries():
    pol = Policy([load_pack_text("pack: p\nstates: {FL: us-fl-ftsa}\nunplaced: none\n", "t")])
    assert pol.for_states(frozenset()) is pol
    with pytest.raises(RulesError, match="not a shipped rule pack"):
        load_pack_text("pack: p\nstates: {FL: no-such-pack}\n", "t")
    with pytest.raises(RulesError, match="two-letter"):
        load_pack_text("pack: p\nstates: {Florida: us-fl-ftsa}\n", "t")


def test_area_code_table_is_the_pinned_geocoders():
    """location._NPA_TABLE (area code -> states) equals what phonenumbers'
    geocoder data says, so a phonenumbers upgrade that moves an area code fails here."""
    from collections import defaultdict

    from phonenumbers.geodata import GEOCODE_DATA

    got = defaultdict(set)
    for prefix, texts in GEOCODE_DATA.items():
        text = texts.get("en") if len(prefix) >= 4 and prefix.startswith("1") else None
        if not text:
            continue
        state = L._STATE_NAMES.get(text) or (text.rsplit(", ", 1)[-1] if ", " in text else "")
        if state in L.US_STATE_ZONES:
            got[prefix[1:4]].add(state)
    assert {a: ",".join(sorted(s)) for a, s in got.items()} == L._NPA_TABLE


def test_compact_zip_table_answers_as_the_package_for_every_zip():
    """zip_place (the compact table of state and zone per ZIP) gives, for every
    ZIP code of the pinned data set, the state and zone zipcodes.matching gives."""
    import zipcodes

    # read in this process (one-shot processes) and through a child (services' warm-up): the same table
    assert L._read_zip_table(child=True) == L._read_zip_table(child=False)
    # The package's first entry of each ZIP, in one pass over its list: calling
    # zipcodes.matching() for each of the 42,000 codes scans the list each time
    # (about 12 s). That this is what matching()[0] answers is checked on codes
    # spread over the whole range (every 100th, over 400 of them, and the last).
    firsts: dict = {}
    for z in zipcodes.list_all():
        firsts.setdefault(z["zip_code"], z)
    codes = sorted(firsts)
    for code in codes[::100] + codes[-1:]:
        assert zipcodes.matching(code)[0] == firsts[code], code
    seen = set()
    for code, first in firsts.items():
        seen.add(code)
        got = L.zip_place(code)
        if first["state"] not in L.US_STATE_ZONES:
            assert got is None, code
            continue
        tz = first["timezone"]
        try:
            ZoneInfo(tz)
            want = (tz,)
        except Exception:  # noqa: BLE001 - unusable zone ("Napakiak"): the whole state's
            want = L.US_STATE_ZONES[first["state"]]
        assert got == (first["state"], want), code
    assert len(seen) > 40000
    assert L.zip_place("00000") is None and L.zip_place("1234") is None and L.zip_place("abcde") is None
