"""A compiled plan's formats are parsed once (plan._split_format) and filled by a
join (plan._fill_parts): the same text as str.format_map, whatever the format
holds (escaped braces, latin-1 MessagePack bytes, fields side by side, a field
used twice); a value that is not a str, a field with a spec or a conversion:
format_map itself. tests/unit/test_plan_template.py compares whole plans."""

from __future__ import annotations

import random

import pytest

from dialguard.decision.plan import _fill_parts, _split_format

FORMATS = [
    "", "plain", "{a}", "{a}{b}", "x{a}y{b}z", "{{n:{a}}}:a:all", "{{{a}}}", "\xa5\x92\x00{a}\x00{{}}\xff{a}",
    "{lo0}|{lo1}|{now}", "}}{{",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_join_is_format_map(fmt):
    rnd = random.Random(fmt)
    for _ in range(20):
        v = {k: "".join(rnd.choice("ab{}\x00\xff0") for _ in range(rnd.randrange(5)))
             for k in ("a", "b", "lo0", "lo1", "now")}
        assert _fill_parts(_split_format(fmt), fmt, v) == fmt.format_map(v)


def test_values_that_are_not_str_are_written_as_format_map_writes_them():
    fmt = "{a}:{b}"
    assert _fill_parts(_split_format(fmt), fmt, {"a": 17, "b": None}) == "17:None"


@pytest.mark.parametrize("fmt", ["{a:04x}", "{a!r}", "{a.b}", "{0}"])
def test_specs_and_conversions_are_left_to_format_map(fmt):
    assert _split_format(fmt) is None
    assert _fill_parts(None, "{a:04x}", {"a": 255}) == "00ff"


def test_a_missing_field_is_an_error_as_with_format_map():
    with pytest.raises(KeyError):
        _fill_parts(_split_format("{a}{b}"), "{a}{b}", {"a": "x"})
