"""Settings: one place that reads the environment (SPEC §6 shared interfaces).

Every component reads DIALGUARD_REDIS_URL and DIALGUARD_PG_DSN; the rest has
safe defaults so a fresh checkout runs against `make up`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DEFAULT_CONFIG = "/etc/dialguard/dialguard.yaml"


class ConfigError(ValueError):
    pass


@lru_cache(maxsize=4)
def _file_settings(path: str) -> dict[str, str]:
    """Settings from the YAML config file: keys are the env names without the
    DIALGUARD_ prefix, lowercase (redis_url, pg_dsn, rules, ...)."""
    p = Path(path)
    if not p.exists():
        if path != DEFAULT_CONFIG:
            raise ConfigError(f"{path}: config file not found (DIALGUARD_CONFIG)")
        return {}
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable config: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return {"DIALGUARD_" + str(k).upper(): str(v) for k, v in data.items() if v is not None}


def _env(name: str, default: str) -> str:
    """Environment first, then the config file, then the default."""
    if name in os.environ:
        return os.environ[name]
    return _file_settings(os.environ.get("DIALGUARD_CONFIG", DEFAULT_CONFIG)).get(name, default)


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default_factory=lambda: _env("DIALGUARD_REDIS_URL", "redis://127.0.0.1:16379/0"))
    pg_dsn: str = field(default_factory=lambda: _env(
        "DIALGUARD_PG_DSN", "postgresql://dialguard@127.0.0.1:15432/dialguard"))
    # Keyed hash for numbers at rest (SPEC §7). The default is for development only;
    # production installs set their own and keep it secret.
    hash_secret: bytes = field(default_factory=lambda: _env(
        "DIALGUARD_HASH_SECRET", "dev-only-insecure-secret").encode())
    default_region: str = field(default_factory=lambda: _env("DIALGUARD_DEFAULT_REGION", "CN"))
    # Comma-separated rule packs or paths, strictest wins.
    rules: str = field(default_factory=lambda: _env("DIALGUARD_RULES", "cn-default"))
    # Time zone of the call centre, for per-day agent caps.
    site_timezone: str = field(default_factory=lambda: _env("DIALGUARD_SITE_TZ", "Asia/Shanghai"))
    key_prefix: str = field(default_factory=lambda: _env("DIALGUARD_KEY_PREFIX", "dg"))
    redis_timeout_ms: int = field(default_factory=lambda: int(_env("DIALGUARD_REDIS_TIMEOUT_MS", "200")))
    redis_pool_size: int = field(default_factory=lambda: int(_env("DIALGUARD_REDIS_POOL", "32")))
    # Lets tests move the rules clock through Redis; never set in production.
    test_clock: bool = field(default_factory=lambda: _env("DIALGUARD_TEST_CLOCK", "0") == "1")
    # FastAGI server's /metrics and /healthz (0 disables); loopback unless Prometheus is remote.
    metrics_host: str = field(default_factory=lambda: _env("DIALGUARD_METRICS_HOST", "127.0.0.1"))
    metrics_port: int = field(default_factory=lambda: int(_env("DIALGUARD_METRICS_PORT", "19100")))
    # Seconds between refreshes of the gauges read from Redis (backlog, live calls, healthy).
    metrics_interval_s: float = field(default_factory=lambda: float(_env("DIALGUARD_METRICS_INTERVAL", "5")))
    node: str = field(default_factory=lambda: _env("DIALGUARD_NODE", os.uname().nodename))
    audit_backlog_max: int = field(default_factory=lambda: int(_env("DIALGUARD_AUDIT_BACKLOG_MAX", "1000000")))
    # Local spool of decisions the audit stream never saw (Redis down, backlog
    # ceiling), shipped by audit-ship on the same host; '' or 'off' disables it.
    spool_dir: str = field(default_factory=lambda: _env("DIALGUARD_SPOOL_DIR", "/var/lib/dialguard/spool"))
    spool_max_mb: float = field(default_factory=lambda: float(_env("DIALGUARD_SPOOL_MAX_MB", "256")))
