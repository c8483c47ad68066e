"""The DIALGUARD_REDIS_HA=1 stack for the failover tests: which node is the
primary, kill it, bring it back (as a replica) with the stack's own script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis as syncredis

from dialguard.config import Settings, redis_auth

REPO = Path(__file__).resolve().parents[2]


def stack_dir() -> Path:
    return Path(os.environ.get("DIALGUARD_STACK_DIR", REPO / ".stack"))


def require_ha() -> Settings:
    s = Settings()
    if not s.redis_sentinels:
        raise RuntimeError("these tests need the HA stack: DIALGUARD_REDIS_HA=1 make up, then source "
                           ".stack/env (or run `make test-ha`)")
    return s


def node(host: str, port: int, **kw) -> syncredis.Redis:
    """A connection to one data node as the tests' Redis user (the data nodes
    answer ACL users only; the Sentinels anyone on loopback)."""
    user, password = redis_auth(Settings().redis_url)
    return syncredis.Redis(host=host, port=port, username=user, password=password, **kw)


def node_url(port: int, host: str = "127.0.0.1") -> str:
    """redis:// URL of one data node with the tests' credentials (for RedisClient)."""
    user, password = redis_auth(Settings().redis_url)
    cred = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@" if password else ""
    return f"redis://{cred}{host}:{port}/0"


def primary(settings: Settings) -> tuple[str, int] | None:
    """The primary the Sentinels name now (the first that answers)."""
    for host, port in settings.sentinel_addrs():
        try:
            r = syncredis.Redis(host=host, port=port, socket_timeout=1, decode_responses=True)
            addr = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.redis_master)
        except (syncredis.RedisError, OSError):
            continue
        if addr:
            return addr[0], int(addr[1])
    return None


def node_dir(port: int) -> Path:
    """The stack folder of the data node on `port` (redis/, redis-replica/, redis-replica2/)."""
    for name in ("redis", "redis-replica", "redis-replica2"):
        conf = stack_dir() / name / "redis.conf"
        if conf.exists() and f"\nport {port}\n" in conf.read_text():
            return stack_dir() / name
    raise RuntimeError(f"no Redis node of this stack listens on port {port}")


def kill_primary(settings: Settings) -> tuple[int, float]:
    """SIGKILL the current primary (no shutdown, no last AOF flush): (its port, monotonic time)."""
    _, port = primary(settings)
    pid = int((node_dir(port) / "redis.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    return port, time.monotonic()


def wait_new_primary(settings: Settings, old_port: int, timeout: float = 30) -> tuple[int, float]:
    """Wait until the Sentinels name another primary that answers as one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p = primary(settings)
        if p and p[1] != old_port:
            try:
                role = node(p[0], p[1], socket_timeout=1).execute_command("ROLE")
                if role[0] == b"master":
                    return p[1], time.monotonic()
            except (syncredis.RedisError, OSError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no failover within {timeout}s (primary still {primary(settings)})")


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
        return True
    except (OSError, ValueError):
        return False


def restore(settings: Settings, timeout: float = 60) -> None:
    """Start what is down again with `make up`'s script: the killed node comes
    back as a replica of the new primary; wait until the Sentinels see it."""
    down = [d for d in ("redis", "redis-replica", "redis-replica2")
            if not _alive(stack_dir() / d / "redis.pid")]
    env = dict(os.environ)
    if down:
            subprocess.run([str(REPO / "scripts" / "stack-up.sh")], env=env, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + timeout
    host, port = primary(settings)
    while time.monotonic() < end:
        info = node(host, port, socket_timeout=1, decode_responses=True).info("replication")
        online = [k for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                  and v.get("state") == "online"]
        if len(online) >= 2:
            return
        time.sleep(0.2)
    raise AssertionError("the old primary did not come back as a replica")


def pack_capped_at_two(name: str, approved_caller_ids: bool = True) -> str:
    """A rules file open every hour of every day, each number capped at 2 per
    24 hours: what the failover tests race against."""
    text = (f'pack: {name}\nversion: "1"\ndefault_region: CN\nhours:\n  zone: callee\n'
            '  weekly: {all: ["00:00-24:00"]}\ncaps:\n'
            '  - {id: two, max: 2, window: {rolling: 24h}, scope: number}\n')
    return text if approved_caller_ids else text + "caller_id: {require_approved: false}\n"
