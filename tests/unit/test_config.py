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
