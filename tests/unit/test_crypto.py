"""dialguard.crypto: AES-GCM sealing and data-key rotation (DIALGUARD_DATA_KEY_OLD)."""

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag

from dialguard.config import _file_settings
from dialguard.crypto import Sealer, data_key, old_data_keys

NUMBER = "+8613800138000"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("DIALGUARD_DATA_KEY", "DIALGUARD_DATA_KEY_OLD", "DIALGUARD_HASH_SECRET", "DIALGUARD_SECRETS_FILE"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    monkeypatch.setenv("DIALGUARD_CONFIG", str(empty))
    _file_settings.cache_clear()
    yield
    _file_settings.cache_clear()


def test_seal_open_round_trip_and_nonce_per_seal(monkeypatch):
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(os.urandom(32)))
    s = Sealer()
    a, b = s.seal(NUMBER), s.seal(NUMBER)
    assert a != b and NUMBER not in a  # random nonce: equal numbers do not give equal tokens
    assert s.open(a) == s.open(b) == NUMBER


def test_rotation_opens_old_tokens_and_seals_with_the_new_key(monkeypatch):
    k1, k2, k3 = (os.urandom(32) for _ in range(3))
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(k1))
    t1 = Sealer().seal(NUMBER)
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(k2))
    t2 = Sealer().seal(NUMBER)
    # after two rotations: k3 current, k2 and k1 old (newest first)
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(k3))
    monkeypatch.setenv("DIALGUARD_DATA_KEY_OLD", f"{b64(k2)}, {b64(k1)}")
    s = Sealer()
    assert s.open(t1) == s.open(t2) == NUMBER
    t3 = s.seal(NUMBER)
    assert Sealer(k3).open(t3) == NUMBER  # new tokens use the current key only
    with pytest.raises(InvalidTag):
        Sealer(k2).open(t3)
    assert s.sealed_with_current_key(t3) and not s.sealed_with_current_key(t1)


def test_without_the_old_key_old_tokens_do_not_open(monkeypatch):
    k1, k2 = os.urandom(32), os.urandom(32)
    token = Sealer(k1).seal(NUMBER)
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(k2))
    with pytest.raises(InvalidTag):
        Sealer().open(token)
    assert Sealer(k2, old_keys=[k1]).open(token) == NUMBER


@pytest.mark.parametrize("var,value,msg", [
    ("DIALGUARD_DATA_KEY", b64(os.urandom(16)), "32 bytes, not 16"),
    ("DIALGUARD_DATA_KEY", "not base64!", "base64 of 32 bytes"),
    ("DIALGUARD_DATA_KEY_OLD", f"{b64(os.urandom(32))},{b64(os.urandom(31))}", "DIALGUARD_DATA_KEY_OLD"),
], ids=["short-key", "not-base64", "short-old-key"])  # fixed ids: pytest-xdist workers must collect the same names
def test_bad_keys_are_a_clear_error(monkeypatch, var, value, msg):
    monkeypatch.setenv("DIALGUARD_DATA_KEY", b64(os.urandom(32)))
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=msg):
        Sealer()


def test_keys_from_the_config_file(monkeypatch, tmp_path):
    k, old = os.urandom(32), os.urandom(32)
    cfg = tmp_path / "dialguard.yaml"
    cfg.write_text(f"data_key: {b64(k)}\ndata_key_old: {b64(old)}\n")
    monkeypatch.setenv("DIALGUARD_CONFIG", str(cfg))
    _file_settings.cache_clear()
    assert data_key() == k and old_data_keys() == [old]


def test_no_key_no_sealing_nothing_derived(monkeypatch):
    """No built-in key: without DIALGUARD_DATA_KEY nothing is sealed or opened,
    whatever the hash secret (the old dev default derived one from it)."""
    monkeypatch.setenv("DIALGUARD_HASH_SECRET", "dev-only-insecure-secret")
    with pytest.raises(ValueError, match="DIALGUARD_DATA_KEY is not set.*dialguard init"):
        data_key()
    with pytest.raises(ValueError, match="DIALGUARD_DATA_KEY is not set"):
        Sealer()


def test_raw_seal_for_bytea_columns_opens_like_a_token(monkeypatch):
    """seal_raw / seal_raw_many (dnc_entries' bytea column): nonce + ciphertext, no base64;
    open() takes them (and memoryviews) as it takes base64 tokens, old keys included."""
    k1, k2 = os.urandom(32), os.urandom(32)
    old = Sealer(k1)
    raw_old = old.seal_raw(NUMBER)
    many = old.seal_raw_many([NUMBER.encode(), b"+14155550100"])
    assert isinstance(raw_old, bytes) and NUMBER.encode() not in raw_old
    assert len(raw_old) == 12 + len(NUMBER) + 16 and len({raw_old, *many}) == 3  # a nonce each
    assert [old.open(x) for x in many] == [NUMBER, "+14155550100"]
    assert old.open(memoryview(raw_old)) == NUMBER
    assert old.open(base64.b64encode(raw_old).decode()) == NUMBER  # the same blob as a token
    s = Sealer(k2, old_keys=[k1])
    assert s.open(raw_old) == NUMBER and not s.sealed_with_current_key(raw_old)
    assert s.sealed_with_current_key(s.seal_raw(NUMBER))
    with pytest.raises(InvalidTag):
        Sealer(k2).open(raw_old)
