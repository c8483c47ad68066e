"""dialguard.metrics: text format, the endpoints, the FastAGI server's session
counters (real loopback sockets, a fake engine), and the Grafana dashboard
against the registry. The registry is process-wide: counters are compared by
difference. The real engine and Redis: tests/integration/test_metrics_agi.py."""

import asyncio
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agi.engines import EngineProvider
from agi.server import FastAGIServer, build_parser
from agi.client import agi_call
from fakes.engine import FakeEngine
from dialguard import metrics
from dialguard.decision.models import REASONS, Decision

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CHECK_ARGS = ("+8613800138000", "c1", "a1")


def sample(name, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def test_metrics_and_health_endpoints():
    healthy = {"ok": True}

    async def health():
        return healthy["ok"], "store answers" if healthy["ok"] else "Redis unreachable"

    before = sample("dialguard_redis_errors_total")
    metrics.observe(Decision(decision_id="a", decision="allow", latency_ms=0.8))
    metrics.observe(Decision(decision_id="b", decision="deny", reasons=["dnc", "outside_hours"], latency_ms=1.5))
    metrics.observe(Decision(decision_id="c", decision="deny", reasons=["guard_unavailable"], latency_ms=200))
    srv = metrics.MetricsServer("127.0.0.1", 0, health)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/metrics") as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=")
                text = await r.text()
            assert 'dialguard_decisions_total{result="allow"}' in text
            assert 'dialguard_deny_reasons_total{reason="dnc"}' in text
            assert f"dialguard_redis_errors_total {before + 1}" in text
            assert "dialguard_decision_latency_seconds_bucket" in text
            om = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/metrics", headers=om) as r:
                assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await r.text()).rstrip().endswith("# EOF")
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            healthy["ok"] = False
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                assert r.status == 503 and "Redis unreachable" in (await r.json())["detail"]
    finally:
        await srv.stop()


async def test_health_that_raises_or_hangs_is_503_and_refresh_errors_do_not_stop_the_loop():
    calls = {"n": 0}

    async def health():
        raise ConnectionError("boom")

    async def refresh():
        calls["n"] += 1
        raise RuntimeError("store down")

    srv = metrics.MetricsServer("127.0.0.1", 0, health, refresh=refresh, interval=0.05)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                body = await r.json()
                assert r.status == 503 and body["ok"] is False and "boom" in body["detail"]
        await asyncio.sleep(0.3)
        assert calls["n"] >= 3  # the loop went on after each failure
    finally:
        await srv.stop()
    with pytest.raises(OSError):
        socket.create_connection((HOST, srv.bound_port), timeout=0.5).close()


async def refreshing_server(when_cancelled) -> metrics.MetricsServer:
    """A started MetricsServer in its first refresh, which awaits `when_cancelled()`
    when cancelled (returns: the cancel swallowed)."""
    inside = asyncio.Event()

    async def health():
        return True, "ok"

    async def refresh():
        inside.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await when_cancelled()

    srv = metrics.MetricsServer("127.0.0.1", 0, health, refresh=refresh, interval=0.01)
    await srv.start()
    await asyncio.wait_for(inside.wait(), 5)
    return srv


async def test_stop_ends_the_refresh_loop_when_a_refresh_swallowed_the_cancel():
    """stop() cancels the refresh loop; a refresh that swallows that cancel (catches it,
    or a library awaiting with asyncio.wait_for on Python 3.11 does: dialguard/cancel.py)
    must not keep the loop going and stop() waiting for ever (a `systemctl stop` of the
    dialer waiting for its kill timeout)."""
    async def swallowed():
        pass

    srv = await refreshing_server(swallowed)
    stopping = asyncio.ensure_future(srv.stop())
    done, _ = await asyncio.wait([stopping], timeout=5)
    assert done, "stop() waits on the refresh loop for ever"


async def test_a_cancel_of_stops_caller_is_not_swallowed():
    """stop() awaits the refresh loop's end; a cancel of the task calling stop() meanwhile
    ends that task (it was taken for the loop's own CancelledError and dropped), and
    the endpoint is closed all the same."""
    async def slowly_out():
        await asyncio.sleep(0.5)  # stop() awaits it
        raise asyncio.CancelledError

    srv = await refreshing_server(slowly_out)
    after = []

    async def caller():
        await srv.stop()
        after.append("went on after its cancel")

    stopping = asyncio.create_task(caller())
    for _ in range(5):
        await asyncio.sleep(0)  # stop() is awaiting the loop
    stopping.cancel()
    done, _ = await asyncio.wait([stopping], timeout=5)
    assert done and stopping.cancelled() and after == []
    with pytest.raises(OSError):
        socket.create_connection((HOST, srv.bound_port), timeout=0.5).close()


def test_text_format_of_a_few_series():
    metrics.set_abandon_rate('camp "q" \\ x', 0.025)
    metrics.LIVE_CALLS.labels("+862150009999").set(3)
    metrics.observe(Decision(decision_id="t", decision="deny", reasons=["holiday"], latency_ms=150))
    text = generate_latest(metrics.REGISTRY).decode()
    lines = text.splitlines()
    # exposition format: HELP and TYPE once per family, labels escaped, floats
    assert "# HELP dialguard_decisions_total Decisions by result" in lines
    assert "# TYPE dialguard_decisions_total counter" in lines
    assert "# TYPE dialguard_decision_latency_seconds histogram" in lines
    assert "# TYPE dialguard_healthy gauge" in lines
    assert 'dialguard_abandon_rate{campaign="camp \\"q\\" \\\\ x"} 0.025' in lines
    assert 'dialguard_live_calls{caller_id="+862150009999"} 3.0' in lines
    buckets = [ln for ln in lines if ln.startswith("dialguard_decision_latency_seconds_bucket{")]
    assert buckets[-1].startswith('dialguard_decision_latency_seconds_bucket{le="+Inf"}')
    assert any(ln.startswith('dialguard_decision_latency_seconds_bucket{le="0.2"}') for ln in buckets)
    assert "_created" not in text  # disabled: no dashboard uses them
    # every reason code is exported from the start (rate() needs the series before the first deny)
    for code in REASONS:
        assert f'dialguard_deny_reasons_total{{reason="{code}"}}' in text
    # and the text parses back to the same values
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["dialguard_abandon_rate"].type == "gauge"
    le_02 = next(s for s in fams["dialguard_decision_latency_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "0.2")
    le_01 = next(s for s in fams["dialguard_decision_latency_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "0.1")
    assert le_02.value >= le_01.value + 1  # the 150 ms decision falls in (0.1, 0.2]


@pytest.mark.parametrize("fields,result", [
    ({"outcome": "allow"}, "ok"),
    ({"outcome": "deny"}, "ok"),
    ({"outcome": "reported"}, "ok"),
    ({"outcome": "protocol_error"}, "malformed"),
    ({"outcome": "unknown_script"}, "malformed"),
    ({"outcome": "timeout"}, "timeout"),
    ({"outcome": "deny", "failure": "timeout"}, "timeout"),
    ({"outcome": "deny", "failure": "protocol"}, "malformed"),
    ({"outcome": "deny", "failure": "error"}, "error"),
    ({"outcome": "crashed"}, "error"),
    ({}, "error"),
])
def test_agi_session_result(fields, result):
    assert metrics.agi_session_result(fields) == result


@pytest.fixture
async def servers():
    made = []

    async def make(engine=None, **kw):
        srv = FastAGIServer(EngineProvider(engine=engine or FakeEngine()), host=HOST, port=0,
                            session_timeout=1.0, **kw)
        await srv.start()
        made.append(srv)
        return srv

    yield make
    for s in made:
        await s.shutdown(grace_s=1)


async def test_agi_session_counters(servers):
    ok0, mal0, to0 = (sample("dialguard_agi_sessions_total", result=r) for r in ("ok", "malformed", "timeout"))
    err0 = sample("dialguard_agi_sessions_total", result="error")
    herr0 = sample("dialguard_agi_handler_errors_total", script="check", kind="error")
    srv = await servers()
    for i in range(3):
        assert (await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)).variables["DIALGUARD_RESULT"] == "ALLOW"
    await agi_call(HOST, srv.bound_port, "nosuchscript", ())
    r, w = await asyncio.open_connection(HOST, srv.bound_port)
    await asyncio.wait_for(r.read(), 3)  # nothing sent: closed at the 1 s deadline
    w.close()
    failing = await servers(FakeEngine("raise"))
    v = (await agi_call(HOST, failing.bound_port, "check", CHECK_ARGS)).variables
    assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "guard_unavailable"
    await asyncio.sleep(0.05)  # the server counts after closing the socket
    assert sample("dialguard_agi_sessions_total", result="ok") - ok0 == 3
    assert sample("dialguard_agi_sessions_total", result="malformed") - mal0 == 1
    assert sample("dialguard_agi_sessions_total", result="timeout") - to0 == 1
    assert sample("dialguard_agi_sessions_total", result="error") - err0 == 1
    assert sample("dialguard_agi_handler_errors_total", script="check", kind="error") - herr0 == 1
    assert sample("dialguard_agi_sessions_active") == 0


async def test_refused_by_allowlist_is_counted(servers):
    ref0 = sample("dialguard_agi_refused_total", reason="allowlist")
    sref0 = sample("dialguard_agi_sessions_total", result="refused")
    srv = await servers(allow=["10.0.0.0/8"])
    r, w = await asyncio.open_connection(HOST, srv.bound_port)
    assert await asyncio.wait_for(r.read(), 2) == b""  # aborted at once
    w.close()
    await asyncio.sleep(0.05)
    assert sample("dialguard_agi_refused_total", reason="allowlist") - ref0 == 1
    assert sample("dialguard_agi_sessions_total", result="refused") - sref0 == 1


class _PingEngine(FakeEngine):
    """A fake engine whose store answers PING or not."""

    timeout = 0.2

    def __init__(self):
        super().__init__()
        self.up = True
        engine = self

        class _Redis:
            async def ping(self):
                if not engine.up:
                    raise ConnectionError("Connection refused")
                return True

        self.redis = _Redis()


async def test_server_health_follows_the_store_and_shutdown(servers):
    eng = _PingEngine()
    port = free_port()
    srv = await servers(eng, metrics_port=port, metrics_interval=60)
    assert srv.metrics_server is not None and srv.metrics_server.bound_port == port
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{HOST}:{port}/healthz") as r:
            assert r.status == 200 and "Redis answers" in (await r.json())["detail"]
        assert sample("dialguard_healthy") == 1
        eng.up = False
        async with s.get(f"http://{HOST}:{port}/healthz") as r:
            body = await r.json()
            assert r.status == 503 and "Redis did not answer PING" in body["detail"]
            assert "Connection refused" in body["detail"]
        assert sample("dialguard_healthy") == 0
        eng.up = True
        srv._closing = True  # what shutdown() sets first: draining, no new sessions
        async with s.get(f"http://{HOST}:{port}/healthz") as r:
            assert r.status == 503 and "shutting down" in (await r.json())["detail"]
        srv._closing = False
    await srv.shutdown(grace_s=1)
    with pytest.raises(OSError):  # stopped with the server
        socket.create_connection((HOST, port), timeout=0.5).close()


async def test_metrics_port_busy_keeps_the_agi_server_serving(servers):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        srv = await servers(metrics_port=busy.getsockname()[1])
        assert srv.metrics_server is None
        v = (await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)).variables
        assert v["DIALGUARD_RESULT"] == "ALLOW"


def test_metrics_port_option(monkeypatch):
    monkeypatch.delenv("DIALGUARD_METRICS_PORT", raising=False)
    assert build_parser().parse_args([]).metrics_port == 19100
    assert build_parser().parse_args(["--metrics-port", "0"]).metrics_port == 0
    monkeypatch.setenv("DIALGUARD_METRICS_PORT", "19345")
    assert build_parser().parse_args([]).metrics_port == 19345
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--metrics-port", "70000"])


# -- the Grafana dashboard ------------------------------------------------------------------
def _registry_series() -> dict[str, str]:
    """Every series name the registry can export -> its family name."""
    if importlib.util.find_spec("ari_app.metrics") is not None:
        importlib.import_module("ari_app.metrics")  # the dialer's own series share the registry
    out = {}
    for fam in metrics.REGISTRY.collect():
        if fam.type == "counter":
            names = [fam.name + "_total"]
        elif fam.type == "histogram":
            names = [fam.name + s for s in ("_bucket", "_count", "_sum")]
        else:
            names = [fam.name]
        out.update({n: fam.name for n in names})
    return out


def test_grafana_dashboard_names_only_existing_metrics_and_covers_them_all():
    dash = json.loads((ROOT / "deploy" / "grafana" / "dialguard.json").read_text())
    series = _registry_series()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used = set()
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        for t in p["targets"]:
            names = set(re.findall(r"\bdialguard_[a-z0-9_]+", t["expr"]))
            assert names, f"{p['title']}: no dialguard metric in {t['expr']!r}"
            unknown = names - set(series)
            assert not unknown, f"{p['title']}: {sorted(unknown)} not exported by any dialguard registry"
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            used |= {series[n] for n in names}
    families = {f for f in series.values() if f.startswith("dialguard_")}
    assert families - used == set(), f"metrics without a panel: {sorted(families - used)}"


# -- deploy/: systemd units and the example config ---------------------------------------------
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def test_every_service_has_a_unit_reading_the_config_file_with_env_overrides():
    assert {u.name for u in UNITS} == {"dialguard-agi.service", "dialguard-agi-outcomes.service",
                                       "dialguard-audit-ship.service", "dialguard-dialer.service",
                                       "dialguard-web.service"}
    for unit in UNITS:
        text = unit.read_text()
        lines = text.splitlines()
        assert "Environment=DIALGUARD_CONFIG=/etc/dialguard/dialguard.yaml" in lines, unit.name
        assert "EnvironmentFile=-/etc/dialguard/dialguard.env" in lines, unit.name
        for opt in ("NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=dialguard", "ProtectHome=yes",
                    "PrivateTmp=yes", "CapabilityBoundingSet=", "User=dialguard", "Restart=always"):
            assert opt in lines, f"{unit.name}: {opt}"
        # the spool must stay writable under ProtectSystem=strict: it lives in the StateDirectory
        exec_start = next(ln for ln in lines if ln.startswith("ExecStart=")).split("=", 1)[1].split()
        assert exec_start[0].startswith("/opt/dialguard/.venv/bin/"), exec_start
        assert Path(exec_start[0]).name in ("dialguard", "dialguard-agi-server", "dialguard-agi-outcomes")
    example = (ROOT / "deploy" / "dialguard.yaml.example").read_text()
    assert "spool_dir: /var/lib/dialguard/" in example  # StateDirectory=dialguard: writable


@pytest.mark.parametrize("argv", [["audit-ship", "--help"], ["dialer", "run", "--help"], ["web", "--help"]])
def test_unit_commands_exist(argv):
    from typer.testing import CliRunner

    from dialguard.cli import app

    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze not found: `make setup` installs the systemd package"
    for unit in UNITS:  # the venv is not installed here: point ExecStart at a binary that exists
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/dialguard/.venv/bin/", "/usr/bin/env "))
    res = subprocess.run([tool, "verify", *(str(tmp_path / u.name) for u in UNITS)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_example_config_is_what_the_services_read(monkeypatch):
    from dialguard.config import Settings, _file_settings

    for var in [v for v in os.environ if v.startswith("DIALGUARD_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DIALGUARD_CONFIG", str(ROOT / "deploy" / "dialguard.yaml.example"))
    _file_settings.cache_clear()
    try:
        s = Settings()
        assert s.redis_url == "redis://127.0.0.1:6379/0" and s.metrics_port == 9464
        args = build_parser().parse_args([])
        assert (args.port, args.metrics_port, args.session_timeout) == (4573, 9464, 5.0)
        monkeypatch.setenv("DIALGUARD_METRICS_PORT", "0")  # the environment wins over the file
        assert build_parser().parse_args([]).metrics_port == 0
    finally:
        _file_settings.cache_clear()


def test_alert_rules_in_the_operations_guide_name_existing_metrics():
    import yaml

    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.startswith("groups:")]
    assert len(blocks) == 1
    rules = yaml.safe_load(blocks[0])["groups"][0]["rules"]
    series = _registry_series()
    assert len(rules) >= 10
    for rule in rules:
        assert rule["alert"].startswith("Dialguard") and rule["labels"]["severity"] in ("page", "warn")
        names = set(re.findall(r"\bdialguard_[a-z0-9_]+", rule["expr"]))
        assert names or "up{" in rule["expr"], rule
        assert names <= set(series), f"{rule['alert']}: {sorted(names - set(series))}"
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["expr"]
