"""Settings: one place that reads the environment (SPEC §6 shared interfaces).

Every component reads DIALGUARD_REDIS_URL and DIALGUARD_PG_DSN; the rest has
safe defaults so a fresh checkout runs against `make up`. Secrets have no
default: DIALGUARD_HASH_SECRET and DIALGUARD_DATA_KEY come from the
environment or from the secrets file `dialguard init` writes (named by
DIALGUARD_SECRETS_FILE; /etc/dialguard/secrets.env when readable), and every
component refuses to start without them (require_secrets).

Redis credentials are parsed here and nowhere else (redis_auth): a user and
password in DIALGUARD_REDIS_URL, or DIALGUARD_REDIS_USER and
DIALGUARD_REDIS_PASSWORD, which win and also serve connections that take no
URL (Sentinel).

Redis behind Sentinel (docs/OPERATIONS.md, "Redis high availability"):
DIALGUARD_REDIS_SENTINELS (host:port,host:port,...) and DIALGUARD_REDIS_MASTER
(the master name the Sentinels monitor) replace the host and port of
DIALGUARD_REDIS_URL, which still gives the data nodes' credentials, database
and scheme; DIALGUARD_REDIS_SENTINEL_PASSWORD authenticates to the Sentinels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

DEFAULT_CONFIG = "/etc/dialguard/dialguard.yaml"
DEFAULT_SECRETS = "/etc/dialguard/secrets.env"
INIT_HINT = ("generate them with `dialguard init --dir /etc/dialguard` (dev stack: `make up` writes "
             ".stack/secrets/) and point DIALGUARD_SECRETS_FILE at the secrets.env it writes, or set "
             "DIALGUARD_HASH_SECRET and DIALGUARD_DATA_KEY in the service environment")


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


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines (systemd EnvironmentFile / shell style; '#' comments, optional quotes)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


@lru_cache(maxsize=8)
def _secrets_settings(path: str, _mtime_ns: int) -> dict[str, str]:
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable secrets file (DIALGUARD_SECRETS_FILE): {exc}") from None
    if st.st_mode & 0o077:
        # Like ssh with a private key: a secret others can read is no secret.
        raise ConfigError(f"{path}: secrets file is readable by others (mode {st.st_mode & 0o777:o}); "
                          f"`chmod 600 {path}` (owner: the service user)")
    return {k: v for k, v in parse_env_file(text).items() if k.startswith("DIALGUARD_")}


def secrets_file() -> str | None:
    """The secrets file in use: DIALGUARD_SECRETS_FILE (environment, then config
    file `secrets_file`), else /etc/dialguard/secrets.env when this process may read it."""
    path = os.environ.get("DIALGUARD_SECRETS_FILE")
    if path is None:
        path = _file_settings(os.environ.get("DIALGUARD_CONFIG", DEFAULT_CONFIG)).get("DIALGUARD_SECRETS_FILE")
    if path:
        return path
    if os.access(DEFAULT_SECRETS, os.R_OK):
        return DEFAULT_SECRETS
    return None


def _secret(name: str) -> str | None:
    path = secrets_file()
    if not path:
        return None
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"{path}: secrets file not found (DIALGUARD_SECRETS_FILE): {exc.strerror}") from None
    return _secrets_settings(path, mtime).get(name)


def _env(name: str, default: str) -> str:
    """Environment first, then the secrets file, then the config file, then the default."""
    if name in os.environ:
        return os.environ[name]
    v = _secret(name)
    if v is not None:
        return v
    return _file_settings(os.environ.get("DIALGUARD_CONFIG", DEFAULT_CONFIG)).get(name, default)


MIN_SECRET_LEN = 16
PUBLIC_DEV_SECRET = "dev-only-insecure-secret"  # the default before issue 13: in every old checkout


def require_secrets(component: str) -> None:
    """Refuse to start without a hash secret and a data key from outside the code."""
    import base64
    import binascii

    problems = []
    secret = _env("DIALGUARD_HASH_SECRET", "")
    if not secret:
        problems.append("DIALGUARD_HASH_SECRET is not set")
    elif len(secret) < MIN_SECRET_LEN:
        problems.append(f"DIALGUARD_HASH_SECRET is shorter than {MIN_SECRET_LEN} characters")
    elif secret == PUBLIC_DEV_SECRET:
        problems.append("DIALGUARD_HASH_SECRET is the development default older releases shipped (public)")
    key = _env("DIALGUARD_DATA_KEY", "")
    if not key:
        problems.append("DIALGUARD_DATA_KEY is not set")
    else:
        try:
            ok = len(base64.b64decode(key.strip(), validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            problems.append("DIALGUARD_DATA_KEY is not base64 of 32 bytes")
    if problems:
        raise ConfigError(f"{component} refuses to start: {'; '.join(problems)}. There are no built-in "
                          f"secrets: {INIT_HINT}")


def redis_auth(url: str | None = None) -> tuple[str | None, str | None]:
    """(username, password) for Redis: each from DIALGUARD_REDIS_USER / DIALGUARD_REDIS_PASSWORD
    when set (environment, secrets file, config file), else from the URL's user info.
    The one place that decides Redis credentials (URL clients and Sentinel alike)."""
    u = urlsplit(url or "")
    user = _env("DIALGUARD_REDIS_USER", "") or (unquote(u.username) if u.username else None)
    password = _env("DIALGUARD_REDIS_PASSWORD", "") or (unquote(u.password) if u.password else None)
    return user, password


def redacted_url(url: str) -> str:
    """The URL for messages and logs: the password replaced by ***."""
    u = urlsplit(url)
    if not u.password:
        return url
    netloc = u.netloc.rsplit("@", 1)
    user = u.netloc.split(":", 1)[0] if u.username else ""
    return urlunsplit((u.scheme, f"{user}:***@{netloc[-1]}", u.path, u.query, u.fragment))


def redis_url_with_auth(url: str) -> str:
    """The URL carrying the credentials redis_auth() chose (unchanged when there are none)."""
    user, password = redis_auth(url)
    if user is None and password is None:
        return url
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (quote(user or "", safe="") + (":" + quote(password, safe="") if password else "") + "@" + host
              + (f":{u.port}" if u.port else ""))
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default_factory=lambda: redis_url_with_auth(
        _env("DIALGUARD_REDIS_URL", "redis://127.0.0.1:16379/0")))
    # Sentinel: comma-separated host:port of the Sentinels ('' = connect to redis_url directly).
    redis_sentinels: str = field(default_factory=lambda: _env("DIALGUARD_REDIS_SENTINELS", ""))
    redis_master: str = field(default_factory=lambda: _env("DIALGUARD_REDIS_MASTER", "dialguard"))
    redis_sentinel_username: str = field(default_factory=lambda: _env("DIALGUARD_REDIS_SENTINEL_USERNAME", ""))
    redis_sentinel_password: str = field(default_factory=lambda: _env("DIALGUARD_REDIS_SENTINEL_PASSWORD", ""))
    # An ALLOW is given only once this many replicas acknowledged its reservation
    # (WAIT after the decision; 0 = asynchronous replication, see docs/OPERATIONS.md).
    redis_wait_replicas: int = field(default_factory=lambda: int(_env("DIALGUARD_REDIS_WAIT_REPLICAS", "0")))
    # How long that WAIT may take (ms, > 0); not acknowledged in time: guard_unavailable.
    redis_wait_ms: int = field(default_factory=lambda: int(_env("DIALGUARD_REDIS_WAIT_MS", "50")))
    pg_dsn: str = field(default_factory=lambda: _env(
        "DIALGUARD_PG_DSN", "postgresql://dialguard@127.0.0.1:15432/dialguard"))
    # Keyed hash for numbers at rest (SPEC §7). No default: empty when unset, and
    # Keys() refuses an empty secret (require_secrets says how to make one).
    hash_secret: bytes = field(default_factory=lambda: _env("DIALGUARD_HASH_SECRET", "").encode())
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

    def __post_init__(self):
        if self.redis_wait_replicas < 0:
            raise ConfigError("DIALGUARD_REDIS_WAIT_REPLICAS must be 0 or more")
        if self.redis_wait_replicas and self.redis_wait_ms <= 0:  # WAIT n 0 would wait forever
            raise ConfigError("DIALGUARD_REDIS_WAIT_MS must be more than 0")
        if self.redis_sentinels:
            self.sentinel_addrs()  # a typo is an error at start, not at the first call
            if not self.redis_master:
                raise ConfigError("DIALGUARD_REDIS_MASTER is empty")
            if urlsplit(self.redis_url).scheme == "unix":
                # The Sentinels name the primary by host and port; a socket is one host's only.
                raise ConfigError("DIALGUARD_REDIS_URL is a unix:// socket but DIALGUARD_REDIS_SENTINELS is set: "
                                  "with Sentinel use redis:// (or rediss://) for the user, password and database")

    def sentinel_addrs(self) -> list[tuple[str, int]]:
        """The Sentinels of DIALGUARD_REDIS_SENTINELS as (host, port); [] when unset."""
        return parse_sentinels(self.redis_sentinels)

    def redis_where(self) -> str:
        """Where Redis is, for messages (never the credentials)."""
        if self.redis_sentinels:
            return f"master {self.redis_master!r} of Sentinels {self.redis_sentinels}"
        u = urlparse(self.redis_url)
        return f"{u.scheme}://{u.hostname or ''}{':' + str(u.port) if u.port else ''}{u.path or ''}"


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """'h1:26379, h2:26379,[::1]:26379' -> [(host, port), ...]; ConfigError when malformed."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"DIALGUARD_REDIS_SENTINELS: {part!r} is not host:port")
        out.append((host, int(port)))
    return out
