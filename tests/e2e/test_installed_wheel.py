"""The package as an admin installs it: a wheel built from this checkout,
installed with pip into a fresh venv, whose `dialguard install asterisk` writes
the dialplan into a configuration folder (twice: the second run changes
nothing) and whose FastAGI server answers the dev Asterisk's checks, on the dev
stack's Redis and PostgreSQL, as it would on an existing PBX.

Slow (builds a wheel and installs its dependencies: about 90 s), so the build
starts in the background when the session collects this module
(tests/e2e/wheel_build.py) and runs beside the integration tests.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import wheel_build
from guard import REPO_ROOT, dialguard, numbers, place_calls, render, scenario, tag
from wheel_build import clean_env

SHIPPED = ("extensions_dialguard.conf", "extensions_dialguard_freepbx.conf", "extensions_dialguard_vicidial.conf")


def run(*cmd, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def stack_server_settings(stack) -> dict[str, str]:
    """The DIALGUARD_* settings the stack's own FastAGI server runs with (its
    store, key prefix, rules, test clock, secrets...), read from its process:
    the installed server gets the same, whatever the stack passes it."""
    pid = int((stack.dir / "services" / "agi.pid").read_text().split()[0])
    pairs = (item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("DIALGUARD_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def installed() -> Path:
    """bin/ of a fresh venv with the built wheel installed (tests/e2e/wheel_build.py: built
    in the background from the session's collection on; waited for here)."""
    build = wheel_build.get()
    rc, log = build.wait()
    assert rc == 0, f"building the wheel and its venv failed (exit {rc}):\n{log}"
    root = build.root
    (wheel,) = (root / "dist").glob("dialguard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in [*(f"dialguard/asterisk/{n}" for n in SHIPPED), "dialguard/decision/lua/decide.lua",
                 "dialguard/packs/cn-default.yaml", "dialguard/sql/010_audit.sql",
                 "dialguard/loadtest/uac.xml", "dialguard/loadtest/uas.xml"]:
        assert part in names, f"{part} missing from {wheel.name}"
    where = run(root / "venv" / "bin" / "python", "-c", "import dialguard, agi; print(dialguard.__file__, agi.__file__)",
                env=clean_env(), cwd=root).stdout
    assert str(REPO_ROOT) not in where and str(root / "venv") in where, where
    return root / "venv" / "bin"


def test_install_asterisk_writes_once_then_changes_nothing(installed: Path, tmp_path: Path) -> None:
    etc = tmp_path / "asterisk"
    etc.mkdir()
    (etc / "extensions.conf").write_text("[globals]\nMINE=1\n\n[from-internal]\nexten => 1,1,Answer()\n")
    (etc / "pjsip.conf").write_text("; the admin's\n")
    mine = digest(etc)

    dry = run(installed / "dialguard", "install", "asterisk", "--conf-dir", etc, "--dry-run", env=clean_env())
    assert "would change" in dry.stdout and digest(etc) == mine, dry.stdout

    first = run(installed / "dialguard", "install", "asterisk", "--conf-dir", etc, env=clean_env())
    assert "+exten => s,1,MSet(DIALGUARD_RESULT=DENY" in first.stdout  # the diff is shown
    for name in SHIPPED:
        assert (etc / name).read_text() == (REPO_ROOT / "asterisk_conf" / name).read_text()
    assert "DIALGUARD_AGI = agi://127.0.0.1:14573" in (etc / "extensions_dialguard_globals.conf").read_text()
    after = digest(etc)
    assert {k: after[k] for k in mine} == mine  # the admin's files are untouched

    second = run(installed / "dialguard", "install", "asterisk", "--conf-dir", etc, env=clean_env())
    assert "up to date, nothing to change" in second.stdout, second.stdout
    assert digest(etc) == after

    # --yes adds the two includes to extensions.conf, once.
    run(installed / "dialguard", "install", "asterisk", "--conf-dir", etc, "--yes", env=clean_env())
    text = (etc / "extensions.conf").read_text()
    assert text.startswith("[globals]\n#include extensions_dialguard_globals.conf\nMINE=1\n"), text
    assert text.count("#include extensions_dialguard.conf") == 1
    again = run(installed / "dialguard", "install", "asterisk", "--conf-dir", etc, "--yes", env=clean_env())
    assert "up to date" in again.stdout and (etc / "extensions.conf").read_text() == text


async def test_installed_server_answers_the_pbx(installed: Path, stack, guard, asterisk, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("wheel")
    ok, dnc = numbers(2)
    dialguard("dnc", "add", dnc)
    port = free_port()
    log = tmp_path / "agi.log"
    env = clean_env() | stack_server_settings(stack)
    # The same Redis, as the stack's server connects to it (its own ACL user, the guard role).
    assert env.get("DIALGUARD_TEST_CLOCK") == "1"
    assert env["DIALGUARD_REDIS_URL"].rsplit("@", 1)[-1] == stack.redis_url.rsplit("@", 1)[-1]
    assert env["DIALGUARD_REDIS_URL"].startswith("redis://dialguard-guard:")
    with open(log, "wb") as out:
        # --log-sessions: a line per session (successful ones are DEBUG by default), to tell its checks apart
        server = subprocess.Popen([str(installed / "dialguard-agi-server"), "--port", str(port), "--metrics-port", "0",
                                   "--log-sessions"],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    old = asterisk.rx("dialplan show globals").split("DIALGUARD_AGI=", 1)[1].split()[0]
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        asterisk.rx(f"dialplan set global DIALGUARD_AGI agi://127.0.0.1:{port}")
        injection = render(scenario("installed_wheel", "calls.csv"), tmp_path / "calls.csv", ok=ok, dnc=dnc,
                           campaign=campaign, agent=f"e2e-agent-{tag()}")
        run_ = place_calls(stack, injection, tmp_path)
    finally:
        asterisk.rx(f"dialplan set global DIALGUARD_AGI {old}")
        server.terminate()
        server.wait(timeout=15)

    assert [i.number for i in run_.invites] == [ok], run_.carrier.describe()
    assert Counter((c.number, c.outcome, c.code) for c in run_.calls) == \
        {(ok, "answered", None): 1, (dnc, "rejected", 403): 1}, run_.calls
    # The checks were answered by the installed server, not the stack's.
    sessions = [line for line in log.read_text().splitlines() if campaign in line and '"script": "check"' in line]
    assert [('"outcome": "allow"' in s, '"outcome": "deny"' in s) for s in sessions] == [(True, False), (False, True)], sessions
