"""The FastAGI server over real loopback sockets, driven by a scripted
Asterisk peer (agi.client.AgiPeer) and a fake engine object. Protocol
tests: the real engine and Redis are exercised by tests/integration."""

import asyncio
import json
import logging

import pytest

from agi import protocol as p
from agi.engines import EngineProvider
from agi.handlers import Options
from agi.server import FastAGIServer, build_parser
from agi.client import AgiPeer, agi_call, env_block
from fakes.engine import FakeEngine

HOST = "127.0.0.1"
CHECK_ARGS = ("+8613800138000", "c1", "a1")


@pytest.fixture
async def make_server():
    servers = []

    async def make(engine=None, provider=None, **kw):
        engine = engine if engine is not None else FakeEngine()
        kw.setdefault("session_timeout", 2.0)
        srv = FastAGIServer(provider or EngineProvider(engine=engine), host=HOST, port=0, **kw)
        await srv.start()
        servers.append(srv)
        return srv, engine

    yield make
    for s in servers:
        await s.shutdown(grace_s=1)


def sessions(caplog):
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "agi_session"]


async def test_check_allow_sets_every_variable_deny_first_allow_last(make_server):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, uniqueid="1700000000.42")
    v = res.variables
    assert res.history[0] == ("DIALGUARD_RESULT", "DENY")
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert v["DIALGUARD_REASONS"] == "" and v["DIALGUARD_NEXT_ELIGIBLE"] == ""
    assert v["DIALGUARD_CALLERID"] == "+861012345678" and v["DIALGUARD_MAXDURATION"] == "3600"
    assert len(v["DIALGUARD_DECISION_ID"]) == 32
    req = eng.calls[0][1]
    assert (req["number"], req["campaign"], req["agent"], req["call_id"]) == (*CHECK_ARGS, "1700000000.42")
    assert res.closed_by_server


async def test_check_deny_reports_all_reasons_and_next_eligible(make_server):
    srv, _ = await make_server(FakeEngine("deny:attempt_cap,min_interval"))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    v = res.variables
    assert v["DIALGUARD_RESULT"] == "DENY"
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert v["DIALGUARD_REASONS"] == "attempt_cap,min_interval"
    assert v["DIALGUARD_NEXT_ELIGIBLE"] == "2025-03-04T01:00:00Z"
    assert v["DIALGUARD_MAXDURATION"] == "0" and v["DIALGUARD_CALLERID"] == ""
    assert v["DIALGUARD_DECISION_ID"]


async def test_check_arguments_from_query_subject_callerid_callid(make_server):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "check?campaign=c7&agent=a%209&callid=X1",
                         ("+8613800138000", "", "", 'debt "17"', "+861088888888"))
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    req = eng.calls[0][1]
    assert req["campaign"] == "c7" and req["agent"] == "a 9" and req["call_id"] == "X1"
    assert req["subject"] == 'debt "17"' and req["caller_id"] == "+861088888888"
    assert res.variables["DIALGUARD_CALLERID"] == "+861088888888"


@pytest.mark.parametrize("args, reasons", [
    (("", "c1", "a1"), "invalid_number"),
    (("+8613800138000", "", "a1"), "campaign_not_approved"),
    (("+8613800138000", "c1", ""), "guard_unavailable"),
    (("1" * 65, "", "a1"), "invalid_number,campaign_not_approved"),
])
async def test_check_unusable_arguments_deny_without_engine(make_server, args, reasons):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "check", args)
    assert res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_REASONS"] == reasons
    assert eng.calls == []


@pytest.mark.parametrize("engine, provider", [
    (FakeEngine("raise"), None),
    (None, "down"),
])
async def test_engine_failure_denies_guard_unavailable(make_server, engine, provider):
    if provider == "down":
        async def factory():
            raise ConnectionError("redis down")
        provider = EngineProvider(factory, retry_s=60)
    srv, _ = await make_server(engine, provider)
    for _ in range(2):
        res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
        assert res.variables["DIALGUARD_RESULT"] == "DENY"
        assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"
        assert ("DIALGUARD_RESULT", "ALLOW") not in res.history


async def test_engine_ready_says_where_redis_is_without_the_password(caplog):
    import dataclasses
    import logging

    from dialguard.config import Settings

    eng = FakeEngine()
    eng.settings = dataclasses.replace(Settings(), redis_url="unix://dialguard-guard:s3cret@/run/redis/r.sock?db=0")

    async def factory():
        return eng

    with caplog.at_level(logging.INFO, "dialguard.agi"):
        assert await EngineProvider(factory).get() is eng
    ready = [r for r in caplog.records if r.getMessage() == "engine ready"]
    assert ready[0].fields == {"event": "engine_ready", "redis": "unix:///run/redis/r.sock"}
    assert "s3cret" not in str(ready[0].fields)


async def test_slow_engine_denies_within_the_session_deadline(make_server):
    srv, _ = await make_server(FakeEngine(delay_s=10), session_timeout=1.0,
                               options=Options(engine_timeout_s=30))
    t = asyncio.get_running_loop().time()
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert asyncio.get_running_loop().time() - t < 1.5
    assert res.variables == {"DIALGUARD_RESULT": "DENY", "DIALGUARD_REASONS": "guard_unavailable"}


async def test_engine_timeout_option(make_server):
    srv, _ = await make_server(FakeEngine(delay_s=0.5), options=Options(engine_timeout_s=0.1))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"


# Commands of an allowed check: "set" mode, DENY + 7 SET VARIABLE; "mset" mode
# (the default), DENY + one EXEC MSet carrying the 7 others.
N_COMMANDS = {"set": 8, "mset": 2}


@pytest.mark.parametrize("mode, at", [("set", 2), ("mset", 1)])
async def test_hangup_before_reply_is_not_a_reply(make_server, caplog, mode, at):
    # Asterisk's behaviour: HANGUP, then dead-channel-safe commands (SET VARIABLE,
    # EXEC) still get 200. The allow is delivered so the hangup handler can report it.
    srv, _ = await make_server(options=Options(set_mode=mode))
    with caplog.at_level(logging.DEBUG, "dialguard.agi"):
        res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, hangup_before=at)
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert len(res.history) == 8  # every reply matched its own command
    assert len(res.commands) == N_COMMANDS[mode]
    assert sessions(caplog)[-1]["hungup"] is True


@pytest.mark.parametrize("mode, at", [("set", i) for i in range(8)] + [("mset", i) for i in range(2)])
async def test_hangup_then_511_never_allows(make_server, mode, at):
    srv, eng = await make_server(options=Options(set_mode=mode))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, hangup_before=at, strict_dead=True)
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert res.closed_by_server
    if at >= 1:  # the engine allowed: the undelivered allow is given back
        assert eng.calls[-1][0] == "report_outcome" and eng.calls[-1][2]["result"] == "failed"


@pytest.mark.parametrize("reply", [
    b"510 Invalid or unknown command\n",
    b"520 Invalid command syntax.  Proper usage not available.\n",
    b"520-Invalid command syntax.  Proper usage follows:\n Usage: SET VARIABLE <n> <v>\n"
    b"\tSets a variable.\n520 End of proper usage.\n",
    b"520-Invalid command syntax.  Proper usage follows:\n Usage: glued520 End of proper usage.\n",
])
@pytest.mark.parametrize("mode, at", [("set", 5), ("mset", 1), ("set", 0), ("mset", 0)])
async def test_error_replies_leave_deny(make_server, reply, mode, at):
    srv, _ = await make_server(options=Options(set_mode=mode))
    # A command before ALLOW is refused (set: the 6th, DECISION_ID; mset: the
    # MSet itself; both: the first DENY, answered after the decision): no ALLOW.
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, replies={at: reply})
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"
    # the replies stayed in step: the commands after the refused one were answered
    assert res.commands[-1] == 'SET VARIABLE DIALGUARD_REASONS "guard_unavailable"'


@pytest.mark.parametrize("reply", [b"garbage\n", b"200 nothing\n", b"HANGUP\n" * 10, b"\xff\xfe\n"])
@pytest.mark.parametrize("mode, at", [("set", 3), ("mset", 0)])
async def test_garbage_replies_close_without_allow(make_server, reply, mode, at):
    srv, _ = await make_server(options=Options(set_mode=mode))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, replies={at: reply})
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history


async def test_unknown_script_is_logged_and_closed(make_server, caplog):
    srv, eng = await make_server()
    with caplog.at_level(logging.INFO, "dialguard.agi"):
        res = await agi_call(HOST, srv.bound_port, "nosuch", CHECK_ARGS)
    assert res.commands == [] and res.closed_by_server and eng.calls == []
    assert sessions(caplog)[-1]["outcome"] == "unknown_script"


async def raw_session(port: int, data: bytes, wait: float = 3.0) -> tuple[bytes, float]:
    r, w = await asyncio.open_connection(HOST, port)
    t = asyncio.get_running_loop().time()
    try:
        w.write(data)
        await w.drain()
    except ConnectionError:
        pass
    got = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await r.read(65536):
                got += chunk
    except (ConnectionError, TimeoutError):
        pass
    w.close()
    return got, asyncio.get_running_loop().time() - t


HOSTILE = [
    b"",  # connect and say nothing (deadline)
    b"agi_network: yes\nagi_network_script: check\n",  # short block, peer then silent
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # TLS hello
    b"agi_network_script: check\n" + b"agi_x: " + b"A" * 10000 + b"\n\n",  # line too long
    b"".join(f"agi_k{i}: v\n".encode() for i in range(200)) + b"\n",  # too many lines
    b"agi_network_script: check\nagi_arg_1: \xff\n\n",  # non-UTF-8 argument
    b"agi_network_script: check?campaign=%zz&&\n\n",
    b"agi_network: yes\nagi_network: yes\n\n",
    b"\n\n\n",
    b"A" * 20000,  # no newline at all
    b"agi_network_script: check\nagi_arg_1: +8613800138000\nagi_arg_3: a1\n\n",  # arg gap
]


@pytest.mark.parametrize("data", HOSTILE)
async def test_hostile_session_closed_without_commands(make_server, data):
    srv, eng = await make_server(session_timeout=0.5)
    got, took = await raw_session(srv.bound_port, data)
    assert b"ALLOW" not in got and got == b""
    assert took < 2.0
    assert eng.calls == []


async def test_a_line_longer_than_allowed_is_refused_at_once_not_held(make_server):
    """A pending connection sending one endless line is handed to the session (which
    refuses it) as soon as the line passes max_line_bytes: not kept in memory, growing
    up to the whole block's bound, until the environment's deadline (4 s here)."""
    srv, eng = await make_server(session_timeout=10.0, env_timeout=4.0)
    r, w = await asyncio.open_connection(HOST, srv.bound_port)
    t0 = asyncio.get_running_loop().time()
    w.write(b"agi_network: yes\nagi_x: " + b"A" * (srv.max_line_bytes + 100))  # no newline, kept open
    await w.drain()
    async with asyncio.timeout(8):
        got = await r.read()  # the server closes it
    took = asyncio.get_running_loop().time() - t0
    w.close()
    assert got == b"" and eng.calls == []
    assert took < 2.0, took  # before: held until the 4 s deadline


async def test_non_utf8_caller_name_still_served(make_server):
    srv, _ = await make_server()
    peer = await AgiPeer.connect(HOST, srv.bound_port)
    block = env_block("check", CHECK_ARGS).replace(b"Agent One", b"Agent \xe9")
    await peer.send(block)
    res = await peer.serve()
    await peer.close()
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"


async def test_peer_vanishes_mid_session(make_server, caplog):
    srv, eng = await make_server()
    peer = await AgiPeer.connect(HOST, srv.bound_port)
    await peer.send(env_block("check", CHECK_ARGS))
    await peer.reader.readline()  # first SET VARIABLE
    peer.writer.transport.abort()
    await asyncio.sleep(0.2)
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"


async def test_server_survives_200_hostile_sessions_then_serves(make_server):
    srv, eng = await make_server(session_timeout=0.5)
    await asyncio.gather(*(raw_session(srv.bound_port, HOSTILE[i % len(HOSTILE)], wait=2.0)
                           for i in range(200)))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    assert len([c for c in eng.calls if c[0] == "decide"]) == 1


async def test_allowlist_refuses_client(make_server, caplog):
    srv, eng = await make_server(allow=["10.0.0.0/8", "::1/128"])
    with caplog.at_level(logging.INFO, "dialguard.agi"):
        got, _ = await raw_session(srv.bound_port, env_block("check", CHECK_ARGS), wait=1.0)
    assert got == b"" and eng.calls == []
    # refusals are counted in one line a second (agi/flood.py), not a line each
    counts = [r.fields["counts"] for r in caplog.records if getattr(r, "fields", {}).get("event") == "agi_flood"]
    assert counts == [{"refused (client address not allowed)": 1}]
    srv2, _ = await make_server(allow=["127.0.0.0/8"])
    res = await agi_call(HOST, srv2.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"


def test_allowlist_matching():
    srv = FastAGIServer(EngineProvider(engine=FakeEngine()), allow=["127.0.0.1/32,192.168.0.0/16"])
    assert srv.allowed("127.0.0.1") and srv.allowed("192.168.3.4") and srv.allowed("::ffff:127.0.0.1")
    assert not srv.allowed("127.0.0.2") and not srv.allowed("::1") and not srv.allowed("junk")
    assert FastAGIServer(EngineProvider(engine=FakeEngine())).allowed("203.0.113.9")


async def test_max_sessions_refuses_extra(make_server):
    srv, eng = await make_server(FakeEngine(delay_s=0.5), max_sessions=1)
    first = asyncio.create_task(agi_call(HOST, srv.bound_port, "check", CHECK_ARGS))
    await asyncio.sleep(0.1)
    got, _ = await raw_session(srv.bound_port, env_block("check", CHECK_ARGS), wait=1.0)
    assert got == b""
    assert (await first).variables["DIALGUARD_RESULT"] == "ALLOW"


async def test_graceful_shutdown_finishes_sessions_in_flight(make_server):
    srv, eng = await make_server(FakeEngine(delay_s=0.5))
    inflight = asyncio.create_task(agi_call(HOST, srv.bound_port, "check", CHECK_ARGS))
    await asyncio.sleep(0.1)
    await srv.shutdown(grace_s=3)
    res = await inflight
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, srv.bound_port)


async def test_report_handler(make_server):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "report", ("ANSWER", "42", "43", "16", "d1"),
                         uniqueid="1700000000.7")
    assert res.commands == []
    assert eng.calls == [("report_outcome", "1700000000.7",
                          {"result": "conversation", "talk_s": 42, "hangup_cause": 16, "sip_code": None})]
    await agi_call(HOST, srv.bound_port, "report", ("BUSY", "", "0", "17", "d2", "", "CALL-2"))
    assert eng.calls[-1] == ("report_outcome", "CALL-2", {"result": "busy", "talk_s": 0, "hangup_cause": 17,
                                                          "sip_code": None})
    # the trunk's SIP code (8th argument, the digits of HANGUPCAUSE(<channel>,tech)): a carrier's 403
    await agi_call(HOST, srv.bound_port, "report", ("CONGESTION", "", "0", "21", "d4", "", "CALL-4", "403"))
    assert eng.calls[-1] == ("report_outcome", "CALL-4", {"result": "failed", "talk_s": 0, "hangup_cause": 21,
                                                          "sip_code": 403})
    await agi_call(HOST, srv.bound_port, "report", ("BUSY", "", "0", "17", "d5", "", "CALL-5", "486"))
    assert eng.calls[-1][2] == {"result": "busy", "talk_s": 0, "hangup_cause": 17, "sip_code": 486}
    await agi_call(HOST, srv.bound_port, "report", ("CONGESTION", "", "0", "21", "d6", "", "CALL-6", "x"))
    assert eng.calls[-1][2]["sip_code"] is None  # not a SIP code: unknown, never guessed
    await agi_call(HOST, srv.bound_port, "report?result=voicemail", ("ANSWER", "20", "20", "16", "d3"))
    assert eng.calls[-1][2]["result"] == "voicemail"


async def test_report_without_decision_is_skipped(make_server):
    srv, eng = await make_server()
    await agi_call(HOST, srv.bound_port, "report", ("NOANSWER", "", "0", "19", ""))
    await agi_call(HOST, srv.bound_port, "report?result=bogus", ("ANSWER", "2", "2", "16", "d"))
    assert eng.calls == []


@pytest.mark.parametrize("name, fn", [("optout", "opt_out"), ("complaint", "complaint")])
async def test_number_events(make_server, name, fn):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, name, ("+8613800138000",))
    assert eng.calls == [(fn, "+8613800138000")]
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "OK"}
    res = await agi_call(HOST, srv.bound_port, name, ())
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "ERROR"}
    srv2, _ = await make_server(FakeEngine("raise"))
    res = await agi_call(HOST, srv2.bound_port, f"{name}?number=%2B8613800138000", ())
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "ERROR"}


async def test_session_log_line(make_server, caplog):
    srv, _ = await make_server(FakeEngine("deny:outside_hours"))
    with caplog.at_level(logging.DEBUG, "dialguard.agi"):
        await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    f = sessions(caplog)[-1]
    assert f["outcome"] == "deny" and f["reasons"] == ["outside_hours"] and f["script"] == "check"
    assert f["number"] == "*********8000"  # never the full number in logs
    json.dumps(f, default=str)


async def test_session_log_level(make_server, caplog):
    """A session that went well is logged at DEBUG (the audit trail has the
    decision), at INFO with --log-sessions; a failed one is always a WARNING."""
    srv, _ = await make_server(FakeEngine("deny:outside_hours"))
    with caplog.at_level(logging.INFO, "dialguard.agi"):
        await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
        await agi_call(HOST, srv.bound_port, "nosuchscript", ())
    assert [(f["outcome"], r.levelno) for f, r in
            ((r.fields, r) for r in caplog.records if getattr(r, "fields", {}).get("event") == "agi_session")] \
        == [("unknown_script", logging.WARNING)]
    caplog.clear()
    srv2, _ = await make_server(FakeEngine("deny:outside_hours"), options=Options(log_sessions=True))
    with caplog.at_level(logging.INFO, "dialguard.agi"):
        await agi_call(HOST, srv2.bound_port, "check", CHECK_ARGS)
    assert [r.levelno for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "deny"] == [logging.INFO]
    assert build_parser().parse_args(["--log-sessions"]).log_sessions is True


def test_cli_defaults(monkeypatch):
    monkeypatch.delenv("DIALGUARD_AGI_PORT", raising=False)
    a = build_parser().parse_args([])
    assert (a.host, a.port, a.allow, a.session_timeout) == ("127.0.0.1", 14573, [], 5.0)
    monkeypatch.setenv("DIALGUARD_AGI_PORT", "15000")
    monkeypatch.setenv("DIALGUARD_AGI_ALLOW", "127.0.0.0/8,10.1.0.0/16")
    a = build_parser().parse_args(["--session-timeout", "3"])
    assert (a.port, a.allow, a.session_timeout) == (15000, ["127.0.0.0/8", "10.1.0.0/16"], 3.0)


def test_limits_are_the_documented_ones():
    assert (p.MAX_LINE_BYTES, p.MAX_ENV_LINES) == (8192, 128)


async def test_override_allow_reports_no_reasons(make_server):
    from dialguard.decision.models import Decision

    class OverrideEngine(FakeEngine):
        async def decide(self, req, now=None):
            return Decision(decision_id="o1", decision="allow", reasons=["outside_hours"], override=True,
                            caller_id="+861012345678", max_duration_s=60)

    srv, _ = await make_server(OverrideEngine())
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW" and res.variables["DIALGUARD_REASONS"] == ""


def test_cli_rejects_bad_cidr(capsys):
    from agi.server import main

    with pytest.raises(SystemExit):
        main(["--allow", "not-a-network"])
    assert "--allow" in capsys.readouterr().err


# -- fewer commands: EXEC MSet ----------------------------------------------------------
async def test_mset_allow_is_two_commands_deny_first_allow_last(make_server, caplog):
    srv, _ = await make_server()
    with caplog.at_level(logging.DEBUG, "dialguard.agi"):
        res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert res.commands[0] == 'SET VARIABLE DIALGUARD_RESULT "DENY"'
    assert res.commands[1].startswith("EXEC MSet ") and len(res.commands) == 2
    assert [n for n, _ in res.history] == [
        "DIALGUARD_RESULT", "DIALGUARD_REASONS", "DIALGUARD_CALLERID", "DIALGUARD_MAXDURATION",
        "DIALGUARD_NEXT_ELIGIBLE", "DIALGUARD_DECISION_ID", "DIALGUARD_CALLID", "DIALGUARD_RESULT"]
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert res.variables["DIALGUARD_CALLERID"] == "+861012345678"
    assert sessions(caplog)[-1]["commands"] == 2


@pytest.mark.parametrize("args, want", [
    (CHECK_ARGS, "1700000000.1"),  # no CALLID argument: the channel's uniqueid
    (CHECK_ARGS + ("", "", "V1206101530000004217"), "V1206101530000004217"),  # VICIdial's caller code
])
async def test_allow_names_the_call_id_it_was_recorded_under(make_server, args, want):
    # The outcome report sends DIALGUARD_CALLID back: it must be the call id the
    # engine recorded the allowed call under, or the outcome changes nothing.
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "check", args)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    assert eng.calls[-1][0] == "decide" and eng.calls[-1][1]["call_id"] == want
    assert res.variables["DIALGUARD_CALLID"] == want


async def test_mset_deny_keeps_the_comma_separated_reasons(make_server):
    srv, _ = await make_server(FakeEngine("deny:attempt_cap,min_interval,agent_cap"))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
    assert len(res.commands) == 2
    assert res.variables["DIALGUARD_REASONS"] == "attempt_cap,min_interval,agent_cap"
    assert res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_NEXT_ELIGIBLE"] == "2025-03-04T01:00:00Z"


async def test_mset_missing_falls_back_to_set_variable(make_server, caplog):
    # An Asterisk without MSet answers EXEC with -2 and sets nothing: the check
    # sets every variable one by one, ALLOW still last.
    srv, _ = await make_server()
    with caplog.at_level(logging.DEBUG, "dialguard.agi"):
        res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, mset=False)
    assert len(res.commands) == 9 and res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert len(res.history) == 8
    assert sessions(caplog)[-1]["mset_missing"] is True


@pytest.mark.parametrize("reply", [b"200 result=-1\n", b"200 result=1\n", b"511 Command Not Permitted\n"])
async def test_mset_unexpected_result_denies(make_server, reply):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS, replies={1: reply})
    assert res.variables == {"DIALGUARD_RESULT": "DENY", "DIALGUARD_REASONS": "guard_unavailable"}
    assert eng.calls[-1][0] == "report_outcome"  # the undelivered allow given back


async def test_unsafe_value_for_mset_uses_set_variable(make_server):
    # A caller ID with a character MSet cannot carry: SET VARIABLE quotes anything.
    eng = FakeEngine()
    srv, _ = await make_server(eng)
    res = await agi_call(HOST, srv.bound_port, "check",
                         ("+8613800138000", "c1", "a1", "", '+86"10=$x'))
    assert res.variables["DIALGUARD_CALLERID"] == '+86"10=$x'
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert not any(c.startswith("EXEC") for c in res.commands)


async def test_early_deny_answer_read_after_the_decision(make_server):
    # The DENY is written before the engine decides; its reply is read after, and
    # a refusal of it stops the check before ALLOW.
    srv, _ = await make_server(FakeEngine(delay_s=0.2))
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS,
                         replies={0: b"520 Invalid command syntax.  Proper usage not available.\n"})
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"


# -- one command a check when the dialplan preset DENY (check?preset=deny) ----------------
PRESET = "check?preset=deny"


async def test_preset_allow_is_one_command_allow_last(make_server):
    srv, _ = await make_server()
    res = await agi_call(HOST, srv.bound_port, PRESET, CHECK_ARGS)
    assert len(res.commands) == 1 and res.commands[0].startswith("EXEC MSet ")
    assert res.history[-1] == ("DIALGUARD_RESULT", "ALLOW")
    assert ("DIALGUARD_RESULT", "DENY") not in res.history


async def test_preset_deny_is_one_command_and_never_allows(make_server):
    srv, _ = await make_server(FakeEngine("deny:attempt_cap"))
    res = await agi_call(HOST, srv.bound_port, PRESET, CHECK_ARGS)
    assert len(res.commands) == 1
    assert res.variables["DIALGUARD_REASONS"] == "attempt_cap"
    assert "DIALGUARD_RESULT" not in res.variables  # the dialplan's DENY stays


@pytest.mark.parametrize("reply", [b"510 Invalid or unknown command\n", b"200 result=-1\n",
                                   b"511 Command Not Permitted\n"])
async def test_preset_refused_command_leaves_deny(make_server, reply):
    srv, eng = await make_server()
    res = await agi_call(HOST, srv.bound_port, PRESET, CHECK_ARGS, replies={0: reply})
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert eng.calls[-1][0] == "report_outcome"  # the undelivered allow given back


async def test_preset_engine_timeout_denies(make_server):
    srv, _ = await make_server(FakeEngine(delay_s=0.5), options=Options(engine_timeout_s=0.1))
    res = await agi_call(HOST, srv.bound_port, PRESET, CHECK_ARGS)
    assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"


async def test_the_caller_id_gauges_are_refreshed_at_every_sixth_refresh(make_server, monkeypatch):
    # the costly part of the background refresh (a pool's health figures, on the loop
    # that answers the checks): every 30 s at the default 5 s interval, not every 5 s
    from dialguard import metrics

    asked = []

    async def refresh(engine, timeout=3.0, caller_ids=True):
        asked.append(caller_ids)
        return True

    monkeypatch.setattr(metrics, "refresh_from_engine", refresh)
    srv, _ = await make_server(metrics_interval=5.0)
    for _ in range(13):
        assert await srv.refresh_metrics()
    assert asked == [True, False, False, False, False, False] * 2 + [True]
