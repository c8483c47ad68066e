"""Pure AGI protocol logic: env block parsing, request arguments, quoting,
reply parsing, time formatting and the report outcome mapping."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agi import protocol as p
from agi.handlers.report import classify
from agi.client import env_block, parse_args


def feed_all(block: bytes, **kw) -> dict:
    parser = p.EnvParser(**kw)
    lines = block.splitlines(keepends=True)
    for line in lines:
        if parser.feed(line):
            return parser.env
    parser.feed(b"")  # EOF
    raise AssertionError("unreachable")


def test_env_block_from_asterisk():
    env = feed_all(env_block("check?campaign=c1", ["+8613800138000", "c1", "a1"]))
    assert env["agi_network"] == "yes"
    assert env["agi_network_script"] == "check?campaign=c1"
    assert env["agi_accountcode"] == ""
    assert p.env_args(env) == ["+8613800138000", "c1", "a1"]
    req = p.fastagi_request(env)
    assert (req.name, req.query, req.args) == ("check", {"campaign": "c1"}, ["+8613800138000", "c1", "a1"])


def test_crlf_lines_accepted():
    env = feed_all(b"agi_network: yes\r\nagi_network_script: check\r\n\r\n")
    assert env["agi_network_script"] == "check"


@pytest.mark.parametrize("block, why", [
    (b"agi_network: yes\nagi_request: x\n", "closed"),  # short block: EOF, no blank line
    (b"agi_network: yes\nagi_req", "closed"),  # EOF inside a line
    (b"", "closed"),
    (b"\n", "empty"),
    (b"hello world\n\n", "without ':'"),
    (b"GET / HTTP/1.1\n\n", "without ':'"),
    (b"Host: example\n\n", "bad environment key"),
    (b"agi_x: 1\nagi_x: 2\n\n", "duplicate"),
    (b"agi_\xff: 1\n\n", "non-ASCII"),
    (b"agi_arg_1: \xff\xfe\n\n", "UTF-8"),
    (b"agi_network_script: ch\xe9ck\n\n", "UTF-8"),
    (b"agi_arg_1: a\x01b\n\n", "control character"),
])
def test_env_block_rejected(block, why):
    with pytest.raises(p.ProtocolError, match=why):
        feed_all(block)


def test_env_eof_is_session_closed():
    with pytest.raises(p.SessionClosed):
        feed_all(b"agi_network: yes\n")


def test_env_line_limits():
    ok = b"agi_calleridname: " + b"x" * (p.MAX_LINE_BYTES - 19) + b"\n"
    assert len(ok) == p.MAX_LINE_BYTES
    assert feed_all(ok + b"\n")["agi_calleridname"].startswith("xxx")
    too_long = b"agi_calleridname: " + b"x" * (p.MAX_LINE_BYTES - 18) + b"\n"
    with pytest.raises(p.ProtocolError, match="longer"):
        feed_all(too_long + b"\n")


def test_env_line_count_limit():
    lines = b"".join(f"agi_k{i}: v\n".encode() for i in range(p.MAX_ENV_LINES))
    assert len(feed_all(lines + b"\n")) == p.MAX_ENV_LINES
    more = lines + b"agi_one_more: v\n\n"
    with pytest.raises(p.ProtocolError, match="more than 128"):
        feed_all(more)


def test_informational_non_utf8_is_tolerated():
    env = feed_all(b"agi_calleridname: Jos\xe9\nagi_network_script: check\n\n")
    assert env["agi_calleridname"] == "Jos\ufffd"


def test_arg_gaps_rejected():
    with pytest.raises(p.ProtocolError, match="gaps"):
        p.env_args({"agi_arg_1": "a", "agi_arg_3": "c"})


@pytest.mark.parametrize("script, name, query", [
    ("check", "check", {}),
    ("/check", "check", {}),
    ("check?campaign=c1&agent=a%207", "check", {"campaign": "c1", "agent": "a 7"}),
    ("report?result=voicemail", "report", {"result": "voicemail"}),
    ("check?subject=", "check", {"subject": ""}),
])
def test_parse_script(script, name, query):
    assert p.parse_script(script) == (name, query)


@pytest.mark.parametrize("script", [
    "", "?campaign=c1", "../etc/passwd", "CHECK", "check;rm", "check?a=1&a=2", "check?a=1&&b",
    "x" * 100, "check?" + "&".join(f"k{i}=v" for i in range(40)), "check?a=%ff",
])
def test_parse_script_rejected(script):
    with pytest.raises(p.ProtocolError):
        p.parse_script(script)


def test_parse_script_kept_answers_are_copies():
    """A script parsed again comes from the kept answers: the same answer, its
    query a fresh dict (a handler changing it changes nothing for the next
    session), and a rejected script is rejected every time."""
    name, q1 = p.parse_script("check?preset=deny&campaign=c9")
    q1["campaign"] = "changed"
    assert p.parse_script("check?preset=deny&campaign=c9") == ("check", {"preset": "deny", "campaign": "c9"})
    for _ in range(2):
        with pytest.raises(p.ProtocolError):
            p.parse_script("check?a=1&a=2")


def test_missing_network_script():
    with pytest.raises(p.ProtocolError, match="agi_network_script"):
        p.fastagi_request({"agi_network": "yes"})


def test_classic_request_takes_name_from_first_arg():
    req = p.classic_request({"agi_arg_1": "check?campaign=c9", "agi_arg_2": "+861380013800", "agi_arg_3": ""})
    assert (req.name, req.query, req.args) == ("check", {"campaign": "c9"}, ["+861380013800", ""])
    with pytest.raises(p.ProtocolError):
        p.classic_request({"agi_request": "x"})


@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("two words", "two words"),
    ('say "hi"', 'say "hi"'),
    ("C:\\path\\", "C:\\path\\"),
    ('\\"', '\\"'),
    ("", ""),
    ("line1\nline2\r", "line1line2"),
    ("tab\there", "tabhere"),
    ("电话 subject", "电话 subject"),
])
def test_set_variable_quoting_round_trips_through_asterisk_parse_args(value, expected):
    cmd = p.set_variable_command("DIALGUARD_X", value)
    assert cmd.endswith(b"\n") and cmd.count(b"\n") == 1
    assert parse_args(cmd.decode()[:-1]) == ["SET", "VARIABLE", "DIALGUARD_X", expected]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_set_variable_quoting_property(value):
    cmd = p.set_variable_command("V", value)
    assert cmd.count(b"\n") == 1 and len(cmd) <= p.MAX_COMMAND_BYTES
    argv = parse_args(cmd.decode()[:-1])
    assert argv[:3] == ["SET", "VARIABLE", "V"] and len(argv) == 4
    assert argv[3] == "".join(c for c in value if c >= " " and c != "\x7f")


def test_set_variable_long_value_fits_asterisk_buffer():
    cmd = p.set_variable_command("V", '"' * 3000)
    assert len(cmd) <= p.MAX_COMMAND_BYTES
    assert set(parse_args(cmd.decode()[:-1])[3]) == {'"'}


def test_set_variable_rejects_bad_names():
    for name in ("", "A B", "A\nB", "1X", 'X"'):
        with pytest.raises(ValueError):
            p.set_variable_command(name, "v")


@pytest.mark.parametrize("line, code, result, data, multi", [
    ("200 result=1", 200, "1", None, False),
    ("200 result=0 (timeout)", 200, "0", "timeout", False),
    ("200 result=1 (some value) endpos=1234", 200, "1", "some value", False),
    ("510 Invalid or unknown command", 510, None, None, False),
    ("511 Command Not Permitted on a dead channel", 511, None, None, False),
    ("511 Command Not Permitted on a dead channel or intercept routine", 511, None, None, False),
    ("520 Invalid command syntax.  Proper usage not available.", 520, None, None, False),
    ("520-Invalid command syntax.  Proper usage follows:", 520, None, None, True),
])
def test_reply_head(line, code, result, data, multi):
    reply, more = p.parse_reply_head(line)
    assert (reply.code, reply.result, reply.data, more) == (code, result, data, multi)
    assert reply.ok == (code == 200)


@pytest.mark.parametrize("line", ["HANGUP", "", "ok", "2000 x", "200", "200 nothing"])
def test_reply_head_rejects_garbage(line):
    with pytest.raises(p.ProtocolError):
        p.parse_reply_head(line)


def test_usage_end_marker_even_when_glued():
    assert p.is_usage_end("520 End of proper usage.")
    assert p.is_usage_end(" Sets a variable.520 End of proper usage.")
    assert not p.is_usage_end(" Usage: SET VARIABLE <variablename> <value>")


def test_hangup_line():
    assert p.is_hangup_line("HANGUP") and p.is_hangup_line("HANGUP\r")
    assert not p.is_hangup_line("200 result=1")


def test_format_utc_rounds_up_to_the_second():
    tz8 = timezone(timedelta(hours=8))
    assert p.format_utc(datetime(2025, 3, 4, 9, 0, tzinfo=tz8)) == "2025-03-04T01:00:00Z"
    assert p.format_utc(datetime(2025, 3, 4, 1, 0, 0, 1, tzinfo=timezone.utc)) == "2025-03-04T01:00:01Z"
    assert p.format_utc(None) == ""
    with pytest.raises(ValueError):
        p.format_utc(datetime(2025, 3, 4))


@pytest.mark.parametrize("args, result, talk", [
    (("ANSWER", 42, 42, 16, None), "conversation", 42),
    (("ANSWER", 1, 1, 16, None), "conversation", 1),
    (("ANSWER", 0, 0, 16, None), "answered", 0),
    (("ANSWER", None, 7, 16, None), "conversation", 7),  # no ANSWEREDTIME: CDR billsec
    (("ANSWER", 20, 20, 16, "MACHINE"), "amd", 20),
    (("NOANSWER", None, 0, 19, None), "no_answer", 0),
    (("CANCEL", None, 0, 16, None), "no_answer", 0),
    (("BUSY", None, 0, 17, None), "busy", 0),
    (("CHANUNAVAIL", None, 0, 20, None), "failed", 0),
    (("CONGESTION", None, 0, 34, None), "failed", 0),
    (("", None, None, None, None), "failed", 0),  # never dialed
    ((None, None, None, 17, None), "busy", 0),
    ((None, None, None, 19, None), "no_answer", 0),
    (("SOMETHINGNEW", None, 0, 16, None), "failed", 0),
    (("answer", 5, 5, 16, None), "conversation", 5),
])
def test_report_classify(args, result, talk):
    out = classify(*args, conversation_min_s=1)
    assert (out.result, out.talk_s) == (result, talk)


def test_report_classify_threshold():
    assert classify("ANSWER", 4, 4, 16, conversation_min_s=5).result == "answered"
    assert classify("ANSWER", 5, 5, 16, conversation_min_s=5).result == "conversation"


# -- EXEC MSet -------------------------------------------------------------------------
def test_mset_command_round_trip_through_both_asterisk_parsers():
    from agi.client import mset_pairs, parse_args

    pairs = [("DIALGUARD_REASONS", "attempt_cap,min_interval"), ("DIALGUARD_CALLERID", ""),
             ("DIALGUARD_MAXDURATION", 3600), ("DIALGUARD_NEXT_ELIGIBLE", "2025-03-04T01:00:00Z"),
             ("DIALGUARD_DECISION_ID", "0f" * 16), ("DIALGUARD_RESULT", "ALLOW")]
    cmd = p.mset_command(pairs)
    assert cmd.endswith(b"\n") and cmd.count(b"\n") == 1
    argv = parse_args(cmd.decode()[:-1])
    assert argv[:2] == ["EXEC", "MSet"] and len(argv) == 3
    assert mset_pairs(argv[2]) == [(n, str(v)) for n, v in pairs]


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a=b", "${EVIL}", "a b", "x\n", "é"])
def test_mset_command_refuses_unsafe_values(value):
    with pytest.raises(ValueError):
        p.mset_command([("DIALGUARD_CALLERID", value)])


def test_mset_ok_only_for_result_0():
    assert p.mset_ok(p.parse_reply_head("200 result=0")[0])
    for line in ("200 result=-2", "200 result=1", "510 Invalid or unknown command"):
        assert not p.mset_ok(p.parse_reply_head(line)[0])
