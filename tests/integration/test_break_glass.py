"""Break-glass (dialguard/breakglass.py): without a token the CLI's direct writes are refused, unless
the operator asks for break-glass and the host allows it in the secrets file; then every action is
audited as break-glass with the OS user, whatever DIALGUARD_ACTOR says."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def host(tmp_path):
    """Secrets files like the stack's: one without the switch, one with it; a namespace of its own."""
    src = Path(os.environ.get("DIALGUARD_STACK_SECRETS_FILE") or os.environ["DIALGUARD_SECRETS_FILE"])
    base = "".join(line + "\n" for line in src.read_text().splitlines() if "BREAK_GLASS" not in line)
    files = {}
    for name, text in (("off", base), ("on", base + "DIALGUARD_BREAK_GLASS_ALLOWED=1\n")):
        p = tmp_path / f"{name}.env"
        p.write_text(text)
        p.chmod(0o600)
        files[name] = str(p)
    prefix = f"dgtest:{uuid.uuid4().hex[:10]}"
    yield files, prefix
    import redis

    from dialguard.config import Settings
    r = redis.Redis.from_url(Settings().redis_url)
    for k in r.scan_iter(f"{prefix}:*", count=1000):
        r.delete(k)


def cli(secrets: str, prefix: str, *args: str, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("DIALGUARD_TOKEN", "DIALGUARD_BREAK_GLASS")}
    e.update({"DIALGUARD_SECRETS_FILE": secrets, "DIALGUARD_KEY_PREFIX": prefix,
              "DIALGUARD_ACTOR": "chief-compliance-officer", **env})
    return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], env=e, capture_output=True, text=True,
                          timeout=60)


def paused(secrets: str, prefix: str) -> list:
    r = cli(secrets, prefix, "pause", "--status", "--json")
    assert r.returncode == 0, r.stderr
    return [p["scope"] for p in json.loads(r.stdout)["paused"]]


def test_direct_writes_are_refused_without_a_token_or_break_glass(host):
    files, prefix = host
    for args in (["pause"], ["dnc", "add", "+8613800138000", "--no-db"], ["rules", "apply", "cn-default"],
                 ["override", "grant", "+8613800138000", "--reason", "x"], ["campaign", "approve", "c"]):
        r = cli(files["on"], prefix, *args)  # the host allows it, the operator did not ask
        assert r.returncode == 1 and "DIALGUARD_TOKEN" in r.stderr and "--break-glass" in r.stderr, (args, r.stderr)
    assert paused(files["on"], prefix) == []  # reads need no break-glass


def test_break_glass_needs_the_hosts_switch_in_the_secrets_file(host):
    files, prefix = host
    r = cli(files["off"], prefix, "--break-glass", "pause")
    assert r.returncode == 1 and "does not allow" in r.stderr and "DIALGUARD_BREAK_GLASS_ALLOWED" in r.stderr
    # the switch from the environment does not count: only who may write the secrets file turns it on
    r = cli(files["off"], prefix, "--break-glass", "pause", DIALGUARD_BREAK_GLASS_ALLOWED="1")
    assert r.returncode == 1 and "does not allow" in r.stderr
    assert paused(files["off"], prefix) == []


def test_break_glass_is_audited_with_the_os_user_not_a_typed_name(host):
    files, prefix = host
    me = pwd.getpwuid(os.getuid()).pw_name
    r = cli(files["on"], prefix, "--break-glass", "pause", "--campaign", "bg")
    assert r.returncode == 0, r.stderr
    assert f"break-glass: audited as break-glass:{me}" in r.stderr
    r = cli(files["on"], prefix, "resume", "--campaign", "bg", DIALGUARD_BREAK_GLASS="1")  # the flag's variable
    assert r.returncode == 0, r.stderr
    r = cli(files["on"], prefix, "--break-glass", "override", "grant", "+8613800138000", "--reason", "callback",
            "--approver", "Head of Legal")
    assert r.returncode == 0, r.stderr
    import redis

    from dialguard.config import Settings
    from dialguard.decision.keys import Keys
    rd = redis.Redis.from_url(Settings().redis_url)
    recs = [(f[b"t"].decode(), json.loads(f[b"j"])) for _i, f in rd.xrange(Keys(prefix, b"x").audit)]
    admin = [j for t, j in recs if t == "admin"]
    assert [(j["action"], j["actor"]) for j in admin] == [("pause", f"break-glass:{me}"),
                                                          ("resume", f"break-glass:{me}")]
    grant = [j for t, j in recs if t == "override"][0]
    # the typed approver is kept as a declaration in the reason, never as the approver
    assert grant["approver"] == f"break-glass:{me}" and grant["actor"] == f"break-glass:{me}"
    assert "approval declared: Head of Legal" in grant["why"]


def test_with_a_token_direct_writes_are_refused(host):
    files, prefix = host
    bad = "dgt_AAAAAAAAAAAA_" + "A" * 43
    r = cli(files["on"], prefix, "--break-glass", "override", "grant", "+8613800138000", "--reason", "x",
            DIALGUARD_TOKEN=bad)
    assert r.returncode == 1 and "not available through the API" in r.stderr
    # a write the API has goes there as the token's user, even with --break-glass: never to the store
    r = cli(files["on"], prefix, "--break-glass", "optout", "+8613800138000", DIALGUARD_TOKEN=bad)
    assert r.returncode in (2, 3) and ("401" in r.stderr or "unreachable" in r.stderr), r.stderr
    assert "break-glass: audited" not in r.stderr
