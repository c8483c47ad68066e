"""Entry point of the dialer service (`dialguard dialer run`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ari_app import metrics as m
from ari_app.dialer import Dialer, DialerConfig
from dialguard import metrics
from dialguard.campaigns.store import Store
from dialguard.config import Settings

log = logging.getLogger("ari_app")
DEFAULT_METRICS_PORT = 19101  # + DIALGUARD_PORT_OFFSET (docs/PORTS.md)


def metrics_port_from_env() -> int:
    """DIALGUARD_DIALER_METRICS_PORT; 0 disables; default 19101 + DIALGUARD_PORT_OFFSET."""
    raw = os.environ.get("DIALGUARD_DIALER_METRICS_PORT")
    if raw is None:
        return DEFAULT_METRICS_PORT + int(os.environ.get("DIALGUARD_PORT_OFFSET", "0") or 0)
    raw = raw.strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"DIALGUARD_DIALER_METRICS_PORT={raw!r}: expected a TCP port (0 disables)")
    return int(raw)


def metrics_server(dialer: Dialer, engine, port: int, host: str = "127.0.0.1") -> metrics.MetricsServer:
    """/metrics and /healthz of the dialer: 503 while the ARI events socket is down
    (nothing is dialed then) or the campaign store does not answer; 200
    "degraded" when a calendar its rules use is known for 45 days or less."""

    async def health() -> tuple[bool, str]:
        if not dialer.ari.healthy:
            return False, "ARI events socket down: not dialing"
        try:
            await dialer.store._one("select 1 as ok")
        except Exception as exc:  # noqa: BLE001
            return False, f"PostgreSQL (campaigns) unreachable: {exc!r}"
        held = sorted(dialer.campaigns)
        return True, f"events socket up; campaigns held: {', '.join(held) or 'none'}"

    async def refresh():
        m.EVENTS_SOCKET_UP.set(1 if dialer.ari.healthy else 0)
        await metrics.refresh_from_engine(engine)

    return metrics.MetricsServer(host, port, health, refresh=refresh, interval=2.0,
                                 degraded=lambda: metrics.calendar_degraded(engine))


def parse_agents(text: str) -> dict[str, str]:
    """`a1=PJSIP/agent-phones/sip:a1@127.0.0.1:15090,a2=PJSIP/a2` -> {name: endpoint}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dial = part.partition("=")
        if not sep or not name or "/" not in dial:
            raise ValueError(f"agent {part!r}: expected NAME=TECH/RESOURCE (e.g. a1=PJSIP/a1)")
        out[name.strip()] = dial.strip()
    if not out:
        raise ValueError("no agents: give --agents NAME=ENDPOINT,... (or DIALGUARD_DIALER_AGENTS)")
    return out


def parse_agent_devices(text: str, agents: dict[str, str]) -> dict[str, str]:
    """`a1=PJSIP/a1,a2=PJSIP/a2` -> {agent: Asterisk device whose state is watched}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dev = (x.strip() for x in part.partition("="))
        if not sep or not name or "/" not in dev:
            raise ValueError(f"agent device {part!r}: expected NAME=TECH/RESOURCE (e.g. a1=PJSIP/a1)")
        if name not in agents:
            raise ValueError(f"agent device {part!r}: no agent {name!r} in the dialer's agents")
        out[name] = dev
    return out


def lease_from_env() -> float:
    raw = os.environ.get("DIALGUARD_DIALER_AGENT_LEASE_S", "").strip() or "15"
    try:
        v = float(raw)
    except ValueError:
        v = 0.0
    if not 1 <= v <= 3600:
        raise ValueError(f"DIALGUARD_DIALER_AGENT_LEASE_S={raw!r}: expected seconds between 1 and 3600")
    return v


def drain_from_env() -> float:
    """DIALGUARD_DIALER_DRAIN_S: on SIGTERM, how long ringing and answered calls get to be
    bridged before the dialer stops (default 10; keep the service manager's stop timeout above it)."""
    raw = os.environ.get("DIALGUARD_DIALER_DRAIN_S", "").strip() or "10"
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 600:
        raise ValueError(f"DIALGUARD_DIALER_DRAIN_S={raw!r}: expected seconds between 0 and 600")
    return v


def measure_from_env() -> float:
    """DIALGUARD_DIALER_MEASURE_S: the recent window predictive pacing measures its answer
    rate, ring and talk time over (default 7200; 600-86400). Abandon limits are not
    measured over it: each over its pack's own period."""
    raw = os.environ.get("DIALGUARD_DIALER_MEASURE_S", "").strip() or "7200"
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 600 <= v <= 86400:
        raise ValueError(f"DIALGUARD_DIALER_MEASURE_S={raw!r}: expected seconds between 600 and 86400")
    return v


def config_from_env(agents: dict[str, str], **kw) -> DialerConfig:
    settings = Settings()
    port = os.environ.get("DIALGUARD_ARI_PORT", "18088")
    kw.setdefault("agent_devices", parse_agent_devices(os.environ.get("DIALGUARD_DIALER_AGENT_DEVICES", ""), agents))
    kw.setdefault("agent_lease_s", lease_from_env())
    kw.setdefault("drain_s", drain_from_env())
    kw.setdefault("measure_s", measure_from_env())
    return DialerConfig(
        ari_url=os.environ.get("DIALGUARD_ARI_URL", f"http://127.0.0.1:{port}"),
        ari_user=os.environ.get("DIALGUARD_ARI_USER", "dialguard"),
        ari_password=os.environ.get("DIALGUARD_ARI_PASSWORD", "dialguard-dev"),
        agents=agents, site_timezone=settings.site_timezone,
        # campaigns are assigned to a dialer by this name (default: its Stasis app)
        name=os.environ.get("DIALGUARD_DIALER_NAME") or None, **kw)


async def run_dialer(agents: dict[str, str], *, campaigns=None, trunk="carrier", app="dialguard-dialer",
                     bridge_timeout=1.7, metrics_port: int | None = None) -> None:
    from dialguard.engine import Engine

    settings = Settings()
    port = metrics_port_from_env() if metrics_port is None else metrics_port
    cfg = config_from_env(agents, campaigns=campaigns, trunk=trunk, app=app, bridge_timeout_s=bridge_timeout)
    engine = await Engine.create(settings)
    try:  # the ZIP data set, state packs, holidays: before the first lead, not under its deadline
        await engine.warm_up(campaigns=tuple(campaigns or ()))
    except Exception as exc:  # noqa: BLE001 - dial anyway: a slow first decision denies (fail closed)
        log.warning("engine warm-up failed: %r", exc)
    store = await Store.open(settings.pg_dsn)
    dialer = Dialer(cfg, engine, store)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dialer.stop)
    log.info("dialer %s: %d agents (lease %.0fs, devices watched: %s), campaigns %s, ARI %s", app, len(agents),
             cfg.agent_lease_s, ", ".join(f"{a.name}={a.device}" for a in dialer.agents.values() if a.device) or "none",
             campaigns or "all running", cfg.ari_url)
    srv = None
    if port:
        srv = metrics_server(dialer, engine, port)
        try:
            await srv.start()
            log.info("metrics on http://127.0.0.1:%d/metrics and /healthz", srv.bound_port)
        except OSError as exc:  # dialing matters more than its metrics
            log.error("metrics endpoint not started on port %d: %s", port, exc)
            srv = None
    try:
        await dialer.run()
    finally:
        if srv:
            await srv.stop()
        await store.close()
        await engine.close()
