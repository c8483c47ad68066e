import pytest

from dialguard.config import ConfigError, Settings, _file_settings


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
