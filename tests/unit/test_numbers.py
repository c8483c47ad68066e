import pytest

from dialguard.numbers import NumberError, keyed_hash, normalize, parse_number


@pytest.mark.parametrize("raw,region,e164", [
    ("(202) 555-0123", "US", "+12025550123"),
    ("+1 202-555-0123", "CN", "+12025550123"),
    ("13800138000", "CN", "+8613800138000"),
    ("+86 138 0013 8000", "US", "+8613800138000"),
    ("020 7946 0000", "GB", "+442079460000"),
])
def test_normalizes_human_formats(raw, region, e164):
    assert normalize(raw, region) == e164


@pytest.mark.parametrize("raw,region,problem", [
    ("", "US", "empty"),
    ("abc", "US", "unparseable"),
    ("911", "US", "emergency"),
    ("110", "CN", "emergency"),
    ("95588", "CN", "short code"),
    ("+19005550123", "US", "premium-rate"),
    ("+1202555012", "US", "not a valid number"),
    ("1" * 50, "US", "too long"),
])
def test_blocked_and_invalid_numbers_say_why(raw, region, problem):
    info = parse_number(raw, region)
    assert not info.valid and problem in info.problem
    with pytest.raises(NumberError):
        normalize(raw, region)


def test_time_zones_from_phonenumbers():
    assert parse_number("+12085550123", "US").timezones == ("America/Boise", "America/Los_Angeles")
    assert parse_number("+14805550123", "US").timezones == ("America/Phoenix",)


def test_keyed_hash_is_keyed_and_hides_the_number():
    a = keyed_hash(b"s1", "+12025550123")
    assert a != keyed_hash(b"s2", "+12025550123")
    assert "2025550123" not in a and len(a) == 32


def test_one_mask_for_logs_and_reports():
    """One masking function (issue 13): the FastAGI log fields and the audit
    reports show the same last four digits, never more."""
    from agi.handlers import mask_number as agi_mask
    from dialguard.audit.report import mask_number as report_mask
    from dialguard.numbers import mask_number

    assert agi_mask is mask_number and report_mask is mask_number
    assert mask_number("+8613800000001") == "*********0001"
    assert mask_number("138 0013 8000") == "*******8000"
    assert mask_number("110") == "110"[-4:] and mask_number("") == "" and mask_number(None) is None


def test_channel_names_are_masked_in_logs():
    """A dialplan may dial Local/9<number>@context: the number in a channel name is masked too."""
    from dialguard.numbers import mask_digits

    assert mask_digits("Local/98613974510642@default-00000001;2") == "Local/**********0642@default-00000001;2"
    assert mask_digits("SIP/carrier/+8613974510642") == "SIP/carrier/*********0642"
    assert mask_digits("PJSIP/agent-00000001") == "PJSIP/agent-00000001"
    assert mask_digits(None) is None
