"""Entry point of the dialer service (`dialguard dialer run`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ari_app.dialer import Dialer, DialerConfig
from dialguard.campaigns.store import Store
from dialguard.config import Settings

log = logging.getLogger("ari_app")


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


def config_from_env(agents: dict[str, str], **kw) -> DialerConfig:
    settings = Settings()
    port = os.environ.get("DIALGUARD_ARI_PORT", "18088")
    return DialerConfig(
        ari_url=os.environ.get("DIALGUARD_ARI_URL", f"http://127.0.0.1:{port}"),
        ari_user=os.environ.get("DIALGUARD_ARI_USER", "dialguard"),
        ari_password=os.environ.get("DIALGUARD_ARI_PASSWORD", "dialguard-dev"),
        agents=agents, site_timezone=settings.site_timezone, **kw)


async def run_dialer(agents: dict[str, str], *, campaigns=None, trunk="carrier", app="dialguard-dialer",
                     bridge_timeout=2.0) -> None:
    from dialguard.engine import Engine

    settings = Settings()
    cfg = config_from_env(agents, campaigns=campaigns, trunk=trunk, app=app, bridge_timeout_s=bridge_timeout)
    engine = await Engine.create(settings)
    store = await Store.open(settings.pg_dsn)
    dialer = Dialer(cfg, engine, store)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dialer.stop)
    log.info("dialer %s: %d agents, campaigns %s, ARI %s", app, len(agents), campaigns or "all running", cfg.ari_url)
    try:
        await dialer.run()
    finally:
        await store.close()
        await engine.close()
