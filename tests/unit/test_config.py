import pytest

from dialguard.config import ConfigError, Settings, _file_settings, redacted_url


def test_env_overrides_config_file(tmp_path, monkeypatch):
    cfg = tmp_path / "dialguard.yaml"
    cfg.write_text("redis_url: redis://10.0.0.1:6379/0\nrules: us-tcpa\nredis_timeout_ms: 150\n")
    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", str(cfg))
    monkeypatch.delenv("DIALGUARD_REDIS_URL", raising=False)
    monkeypatch.delenv("DIALGUARD_REDIS_TIMEOUT_MS", raising=False)
    monkeypatch.setenv("DIALGUARD_RULES", "cn-default")
    s = Settings()
    assert s.redis_url == "redis://10.0.0.1:6379/0"
    assert s.redis_timeout_ms == 150
    assert s.rules == "cn-default"  # the environment wins


def test_missing_or_bad_config_file_is_a_clear_error(tmp_path, monkeypatch):
    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        Settings()
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    monkeypatch.setenv("DIALGUARD_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="expected a mapping"):
        Settings()


def test_redis_credentials_in_one_place(monkeypatch, tmp_path):
    """redis_auth: DIALGUARD_REDIS_USER/PASSWORD win over the URL's user info (and
    serve URL-less connections such as Sentinel); Settings().redis_url carries
    them; messages show the URL without its password."""
    from dialguard.config import redacted_url, redis_auth

    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    monkeypatch.setenv("DIALGUARD_CONFIG", str(empty))
    for k in ("DIALGUARD_REDIS_USER", "DIALGUARD_REDIS_PASSWORD", "DIALGUARD_SECRETS_FILE"):
        monkeypatch.delenv(k, raising=False)
    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "redis://dialguard-guard:p%40ss@10.0.0.1:6379/0")
    assert redis_auth(Settings().redis_url) == ("dialguard-guard", "p@ss")
    assert Settings().redis_url == "redis://dialguard-guard:p%40ss@10.0.0.1:6379/0"
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("DIALGUARD_REDIS_USER", "dialguard-shipper")
    monkeypatch.setenv("DIALGUARD_REDIS_PASSWORD", "s3cr:t/")
    assert redis_auth() == ("dialguard-shipper", "s3cr:t/")
    url = Settings().redis_url
    assert url == "redis://dialguard-shipper:s3cr%3At%2F@10.0.0.1:6379/0"
    from dialguard.redisclient import RedisClient

    c = RedisClient(url)
    assert (c.username, c.password, c.host, c.port) == ("dialguard-shipper", "s3cr:t/", "10.0.0.1", 6379)
    assert redacted_url(url) == "redis://dialguard-shipper:***@10.0.0.1:6379/0" and "s3cr" not in redacted_url(url)


def test_sentinel_settings(monkeypatch):
    from dialguard.config import parse_sentinels

    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", "/etc/dialguard/dialguard.yaml")
    monkeypatch.setenv("DIALGUARD_REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380")
    monkeypatch.setenv("DIALGUARD_REDIS_MASTER", "guard")
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "redis://dg:s3cret@ignored:1/2")
    s = Settings()
    assert s.sentinel_addrs() == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)]
    assert "s3cret" not in s.redis_where() and "guard" in s.redis_where()
    assert parse_sentinels("") == []
    for bad in ("10.0.0.1", "10.0.0.1:x", ":26379", "h:70000"):
        with pytest.raises(ConfigError, match="not host:port"):
            parse_sentinels(bad)
    monkeypatch.setenv("DIALGUARD_REDIS_SENTINELS", "10.0.0.1")
    with pytest.raises(ConfigError, match="DIALGUARD_REDIS_SENTINELS"):
        Settings()  # a typo stops the process at start, not at the first call
    # Sentinel mode is TCP: a Unix socket URL with Sentinels stops the process at start too
    monkeypatch.setenv("DIALGUARD_REDIS_SENTINELS", "10.0.0.1:26379")
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "unix://dg:s3cret@/run/redis/redis-server.sock?db=0")
    with pytest.raises(ConfigError, match="unix:// socket but DIALGUARD_REDIS_SENTINELS"):
        Settings()


def test_unix_socket_url_reaches_every_client(monkeypatch):
    """A same-host Redis by its socket: the URL a service gets (its role's user and
    password from redis-<role>.env), for the pipelined client and redis-py's pools."""
    import redis as syncredis
    from redis.asyncio.connection import UnixDomainSocketConnection

    from dialguard import redisconn

    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", "/etc/dialguard/dialguard.yaml")
    monkeypatch.delenv("DIALGUARD_REDIS_SENTINELS", raising=False)
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "unix:///run/redis/redis-server.sock?db=2")
    monkeypatch.setenv("DIALGUARD_REDIS_USER", "dialguard-guard")
    monkeypatch.setenv("DIALGUARD_REDIS_PASSWORD", "p@ss/w:rd")
    s = Settings()
    assert s.redis_where() == "unix:///run/redis/redis-server.sock" and "p@ss" not in redacted_url(s.redis_url)
    fast = redisconn.fast_client(s, timeout=0.2, connect_timeout=0.2)
    assert (fast.path, fast.username, fast.password, fast.db) == \
        ("/run/redis/redis-server.sock", "dialguard-guard", "p@ss/w:rd", 2)
    pool = redisconn.async_redis(s, max_connections=2, timeout=1).connection_pool
    assert issubclass(pool.connection_class, UnixDomainSocketConnection)  # (dialguard.redis_cancel's)
    kw = pool.connection_kwargs
    assert (kw["path"], kw["username"], kw["password"], kw["db"]) == \
        ("/run/redis/redis-server.sock", "dialguard-guard", "p@ss/w:rd", 2)
    sync = redisconn.sync_redis(s).connection_pool
    assert sync.connection_class is syncredis.UnixDomainSocketConnection
    assert sync.connection_kwargs["path"] == "/run/redis/redis-server.sock"


def test_replica_wait_settings(monkeypatch):
    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", "/etc/dialguard/dialguard.yaml")
    monkeypatch.delenv("DIALGUARD_REDIS_SENTINELS", raising=False)
    monkeypatch.setenv("DIALGUARD_REDIS_WAIT_REPLICAS", "1")
    monkeypatch.setenv("DIALGUARD_REDIS_WAIT_MS", "0")  # WAIT 1 0 would block forever
    with pytest.raises(ConfigError, match="DIALGUARD_REDIS_WAIT_MS"):
        Settings()
    monkeypatch.setenv("DIALGUARD_REDIS_WAIT_REPLICAS", "-1")
    monkeypatch.setenv("DIALGUARD_REDIS_WAIT_MS", "50")
    with pytest.raises(ConfigError, match="DIALGUARD_REDIS_WAIT_REPLICAS"):
        Settings()


def test_redis_credentials_from_the_url():
    from dialguard.redisconn import credentials

    s = Settings(redis_url="rediss://guard:p%40ss@h:6380/3", redis_sentinels="h:26379")
    assert credentials(s) == {"username": "guard", "password": "p@ss", "db": 3, "ssl": True}
