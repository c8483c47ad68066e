"""scripts/lib.sh: how the dev stack's services reach Redis (DIALGUARD_REDIS_TRANSPORT).

unix: the single Redis's socket (DIALGUARD_REDIS_SOCKET, default .stack/redis/redis.sock),
still with the role's ACL user and password; tcp: 127.0.0.1. Redis HA stays TCP (the
Sentinels name a primary by host and port): unix with HA is refused.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "scripts" / "lib.sh"


def lib(stack: Path, script: str, **env) -> subprocess.CompletedProcess:
    secrets = stack / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "redis-guard.env").write_text("DIALGUARD_REDIS_USER=dialguard-guard\nDIALGUARD_REDIS_PASSWORD=pw\n")
    base = {"PATH": os.environ["PATH"], "HOME": str(stack), "DIALGUARD_STACK_DIR": str(stack),
            "DIALGUARD_PORT_OFFSET": "0"}
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source "{LIB}"; {script}'],
                          env={**base, **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("transport,expect", [
    (None, "redis://dialguard-guard:pw@127.0.0.1:16379/0"),
    ("tcp", "redis://dialguard-guard:pw@127.0.0.1:16379/0"),
    ("unix", "unix://dialguard-guard:pw@{stack}/redis/redis.sock?db=0"),
])
def test_service_url_follows_the_transport(tmp_path, transport, expect):
    env = {"DIALGUARD_REDIS_TRANSPORT": transport} if transport else {}
    out = lib(tmp_path, "service_url guard", **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expect.format(stack=tmp_path)


def test_operator_url_stays_tcp_and_the_socket_path_can_be_moved(tmp_path):
    out = lib(tmp_path, 'role_url guard; echo; role_url guard unix', DIALGUARD_REDIS_TRANSPORT="unix",
              DIALGUARD_REDIS_SOCKET="/run/dg/r.sock")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["redis://dialguard-guard:pw@127.0.0.1:16379/0",
                                       "unix://dialguard-guard:pw@/run/dg/r.sock?db=0"]


def test_ha_is_tcp_only(tmp_path):
    refused = lib(tmp_path, "service_url guard", DIALGUARD_REDIS_HA="1", DIALGUARD_REDIS_TRANSPORT="unix")
    assert refused.returncode != 0 and "single Redis" in refused.stderr
    ha = lib(tmp_path, "service_url guard", DIALGUARD_REDIS_HA="1")
    assert ha.returncode == 0 and ha.stdout.startswith("redis://"), ha.stderr


def test_an_unknown_transport_is_refused(tmp_path):
    out = lib(tmp_path, "service_url guard", DIALGUARD_REDIS_TRANSPORT="udp")
    assert out.returncode != 0 and "tcp or unix" in out.stderr
