"""No built-in secrets (issue 13 item 3): components refuse to start without a
hash secret and a data key, `dialguard init` makes them (0600), the secrets
file feeds every setting, and a clean environment cannot open a sealed number."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dialguard.config import ConfigError, Settings, require_secrets
from dialguard.crypto import Sealer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NUMBER = "+8613800138000"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No DIALGUARD_* at all, an empty config file: what a fresh install has."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALGUARD_")}
    env.update(DIALGUARD_CONFIG=str(empty), HOME=str(tmp_path), **extra)
    return env


COMPONENTS = {
    "guard (FastAGI server)": [str(BIN / "dialguard-agi-server"), "--port", "0"],
    "shipper": [str(BIN / "dialguard"), "audit-ship", "--drain"],
    "dialer": [str(BIN / "dialguard"), "dialer", "run", "--agents", "a1=PJSIP/a1"],
    "CLI": [str(BIN / "dialguard"), "check", NUMBER, "-c", "c", "-a", "a"],
}


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_component_refuses_to_start_without_secrets(name, tmp_path):
    p = subprocess.run(COMPONENTS[name], env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    msg = " ".join(p.stderr.split())
    assert "refuses to start" in msg and "DIALGUARD_HASH_SECRET is not set" in msg
    assert "DIALGUARD_DATA_KEY is not set" in msg and "dialguard init" in msg, msg


@pytest.mark.parametrize("name", COMPONENTS)
def test_a_data_key_alone_is_not_enough(name, tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    p = subprocess.run(COMPONENTS[name], env=clean_env(tmp_path, DIALGUARD_DATA_KEY=key), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "DIALGUARD_HASH_SECRET is not set" in " ".join(p.stderr.split()), p.stderr


def test_init_writes_private_secrets_that_every_component_accepts(tmp_path):
    d = tmp_path / "etc"
    p = subprocess.run([str(BIN / "dialguard"), "init", "--dir", str(d)], env=clean_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    files = sorted(f.name for f in d.iterdir())
    assert files == ["redis-admin.env", "redis-default.env", "redis-dialer.env", "redis-guard.env", "redis-shipper.env",
                     "redis-users.acl", "redis-web.env", "secrets.env"]
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    text = (d / "secrets.env").read_text()
    # Re-running keeps the secrets: a new key would orphan every sealed number.
    again = subprocess.run([str(BIN / "dialguard"), "init", "--dir", str(d)], env=clean_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and (d / "secrets.env").read_text() == text and "kept" in again.stdout
    # The ACL file holds password hashes only, never a password.
    acl = (d / "redis-users.acl").read_text()
    for role in ("guard", "dialer", "shipper", "admin"):
        pw = [ln for ln in (d / f"redis-{role}.env").read_text().splitlines()
              if ln.startswith("DIALGUARD_REDIS_PASSWORD=")][0].split("=", 1)[1]
        assert len(pw) >= 40 and pw not in acl and f"user dialguard-{role} on" in acl
    assert acl.startswith("user default on") and "nopass" not in acl

    # The components start past the secrets check with the file (the shipper
    # then fails on the unreachable PostgreSQL, exit 3, not on secrets).
    env = clean_env(tmp_path, DIALGUARD_SECRETS_FILE=str(d / "secrets.env"),
                    DIALGUARD_PG_DSN="postgresql://nobody@127.0.0.1:1/none",
                    DIALGUARD_REDIS_URL="redis://127.0.0.1:1/0")
    p = subprocess.run(COMPONENTS["CLI"], env=env, capture_output=True, text=True, timeout=60)
    assert "refuses to start" not in p.stderr and p.returncode == 3, p.stderr


def test_secrets_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "secrets.env"
    f.write_text(f"DIALGUARD_HASH_SECRET={'x' * 64}\nDIALGUARD_DATA_KEY={base64.b64encode(os.urandom(32)).decode()}\n")
    f.chmod(0o644)
    for k in ("DIALGUARD_HASH_SECRET", "DIALGUARD_DATA_KEY", "DIALGUARD_DATA_KEY_OLD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DIALGUARD_SECRETS_FILE", str(f))
    with pytest.raises(ConfigError, match="readable by others.*chmod 600"):
        require_secrets("test")
    f.chmod(0o600)
    require_secrets("test")
    assert Settings().hash_secret == b"x" * 64


def test_rotation_through_the_secrets_file(tmp_path, monkeypatch):
    """DIALGUARD_DATA_KEY_OLD from the file: tokens sealed with the old key still open."""
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    f = tmp_path / "secrets.env"
    for k in ("DIALGUARD_HASH_SECRET", "DIALGUARD_DATA_KEY", "DIALGUARD_DATA_KEY_OLD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DIALGUARD_SECRETS_FILE", str(f))
    f.write_text(f"DIALGUARD_HASH_SECRET={'y' * 32}\nDIALGUARD_DATA_KEY={k1}\n")
    f.chmod(0o600)
    token = Sealer().seal(NUMBER)
    f.write_text(f"DIALGUARD_HASH_SECRET={'y' * 32}\nDIALGUARD_DATA_KEY={k2}\nDIALGUARD_DATA_KEY_OLD={k1}\n")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10_000_000))
    s = Sealer()
    assert s.open(token) == NUMBER and not s.sealed_with_current_key(token)


def test_a_clean_environment_cannot_open_a_sealed_number(tmp_path):
    """A number sealed with the installation's key: a process with only the
    repository (no key from outside) cannot open it; it does not even start."""
    key = base64.b64encode(os.urandom(32)).decode()
    token = Sealer(base64.b64decode(key)).seal(NUMBER)
    code = ("import sys\nfrom dialguard.crypto import Sealer\n"
            "try:\n    print(Sealer().open(sys.argv[1]))\n"
            "except Exception as exc:\n    print('REFUSED', exc)\n")
    p = subprocess.run([sys.executable, "-c", code, token], env=clean_env(tmp_path), capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert NUMBER not in p.stdout and p.stdout.startswith("REFUSED") and "DIALGUARD_DATA_KEY is not set" in p.stdout
    # Every value a repository once shipped as a default opens nothing either.
    for guess in ("dev-only-insecure-secret",):
        import hashlib

        derived = hashlib.sha256(b"dialguard-data-key:" + guess.encode()).digest()
        with pytest.raises(Exception):
            Sealer(derived).open(token)
    p = subprocess.run([sys.executable, "-c", code, token], env=clean_env(tmp_path, DIALGUARD_DATA_KEY=key),
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.stdout.strip() == NUMBER  # the real key, from outside the code, does


def test_keys_refuse_an_empty_hash_secret():
    from dialguard.decision.keys import Keys

    with pytest.raises(ValueError, match="DIALGUARD_HASH_SECRET is not set"):
        Keys("dg", b"")


def test_the_old_public_default_is_refused(tmp_path):
    """The hash secret older releases shipped as a default is public: refused like no secret."""
    key = base64.b64encode(os.urandom(32)).decode()
    env = clean_env(tmp_path, DIALGUARD_HASH_SECRET="dev-only-insecure-secret", DIALGUARD_DATA_KEY=key)
    p = subprocess.run(COMPONENTS["CLI"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "development default" in " ".join(p.stderr.split()), p.stderr


def test_documented_acl_lines_are_the_code_s():
    """docs/OPERATIONS.md shows each role's ACL SETUSER line as dialguard/redis_acl.py builds it."""
    from dialguard.redis_acl import acl_rules

    doc = (REPO / "docs" / "OPERATIONS.md").read_text()
    for role in ("guard", "shipper", "admin", "web"):
        assert f"ACL SETUSER dialguard-{role} reset {acl_rules(role, 'dg')} #" in doc, role
    guard = acl_rules("guard", "dg").split()
    dialer_extra = " ".join(t for t in acl_rules("dialer", "dg").split() if t not in guard)
    assert f"ACL SETUSER dialguard-dialer reset <the guard's rules> {dialer_extra} #" in doc
