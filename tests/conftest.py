"""Service fixtures shared by every suite.

tests/unit needs no service. tests/integration needs the stack's Redis and
PostgreSQL, tests/e2e also its Asterisk and SIPp: `make up` starts them and
writes .stack/env, which is loaded here for settings not already in the
environment. A missing or silent service makes the test FAIL, never skip:
the harness is expected to have brought it up.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from sipp import load_stack_env  # noqa: E402  (tests/e2e/sipp.py, stdlib only)

load_stack_env()


def _session_secrets() -> None:
    """Tests run with a hash secret and data key from outside the code: the
    stack's generated ones (.stack/secrets/secrets.env, named by .stack/env),
    else fresh ones for this session. There are no built-in defaults."""
    import secrets

    from dialguard.config import secrets_file

    if os.environ.get("DIALGUARD_HASH_SECRET") or secrets_file():
        return
    os.environ["DIALGUARD_HASH_SECRET"] = secrets.token_hex(32)
    os.environ["DIALGUARD_DATA_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()


_session_secrets()


def _break_glass_host() -> None:
    """The CLI writes the store directly only in break-glass (dialguard/breakglass.py): the
    tests run it as the operator of a guard host that allows it (a copy of the stack's
    secrets file with DIALGUARD_BREAK_GLASS_ALLOWED=1, and DIALGUARD_BREAK_GLASS=1), so the
    commands under test run as documented. tests/integration/test_break_glass.py checks the
    refusals with neither."""
    import atexit
    import tempfile

    from dialguard.config import secrets_file

    src = secrets_file()
    if not src or not os.path.exists(src):
        return
    d = tempfile.mkdtemp(prefix="dialguard-break-glass-")
    dst = os.path.join(d, "secrets.env")
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(Path(src).read_text() + "\nDIALGUARD_BREAK_GLASS_ALLOWED=1\n")
    atexit.register(shutil.rmtree, d, True)
    os.environ["DIALGUARD_STACK_SECRETS_FILE"] = src
    os.environ["DIALGUARD_SECRETS_FILE"] = dst
    os.environ["DIALGUARD_BREAK_GLASS"] = "1"


_break_glass_host()


def pytest_configure(config):
    """Record every number the session hands to the system (tests/e2e/used_numbers.py).
    Patched before collection, so the test modules import the recording versions."""
    import functools
    import inspect

    import guard
    import sipp
    from used_numbers import record

    from dialguard.campaigns.store import Store
    from dialguard.engine import Engine

    def recording(fn, pick):
        """fn, recording pick(args, kwargs) and (for a list result) what it returns."""
        if getattr(fn, "_records", False):
            return fn
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def wrapper(*a, **kw):
                record(*pick(a, kw))
                return await fn(*a, **kw)
        else:
            @functools.wraps(fn)
            def wrapper(*a, **kw):
                record(*pick(a, kw))
                out = fn(*a, **kw)
                record(*(out if isinstance(out, list) else ()))
                return out
        wrapper._records = True
        return wrapper

    def arg(i, name):
        return lambda a, kw: a[i] if len(a) > i else kw.get(name)

    leads, req = arg(2, "leads"), arg(1, "req")
    write = sipp.write_injection
    if not getattr(write, "_records", False):
        @functools.wraps(write)
        def write_injection(path, rows, *a, **kw):
            rows = [list(r) for r in rows]  # an iterator is read once: here, then written
            record(*[f for r in rows for f in r])
            return write(path, rows, *a, **kw)

        write_injection._records = True
        sipp.write_injection = write_injection
    guard.numbers = recording(guard.numbers, lambda a, kw: ())
    guard.caller_ids = recording(guard.caller_ids, lambda a, kw: ())
    Store.add_leads = recording(Store.add_leads, lambda a, kw: [x.number for x in leads(a, kw)])
    Engine.decide = recording(Engine.decide, lambda a, kw: [req(a, kw).number, req(a, kw).caller_id])
    for name in ("opt_out", "dnc_add", "approve_caller_id"):
        setattr(Engine, name, recording(getattr(Engine, name), lambda a, kw: [a[1] if len(a) > 1
                                                                        else kw.get("number") or kw.get("e164")]))


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"DIALGUARD_{name}_PORT", default))


@dataclass(frozen=True)
class Stack:
    """Where this checkout's stack listens (docs/PORTS.md, .stack/env)."""

    dir: Path
    redis_url: str
    pg_dsn: str
    sip_port: int
    ari_port: int
    agi_port: int
    carrier_port: int
    agents_port: int
    ari_user: str
    ari_password: str

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.ari_port}"

    def log(self, part: str) -> Path:
        return {
            "redis": self.dir / "redis" / "redis.log",
            "pg": self.dir / "pg" / "postgresql.log",
            "asterisk": self.dir / "asterisk" / "log" / "messages.log",
        }[part]


def _stack_from_env() -> Stack:
    return Stack(
        dir=Path(os.environ.get("DIALGUARD_STACK_DIR", REPO_ROOT / ".stack")),
        redis_url=os.environ.get("DIALGUARD_REDIS_URL", "redis://127.0.0.1:16379/0"),
        pg_dsn=os.environ.get("DIALGUARD_PG_DSN", "postgresql://dialguard@127.0.0.1:15432/dialguard"),
        sip_port=_port("SIP", 15060),
        ari_port=_port("ARI", 18088),
        agi_port=_port("AGI", 14573),
        carrier_port=_port("CARRIER", 15070),
        agents_port=_port("AGENTS", 15080),
        ari_user=os.environ.get("DIALGUARD_ARI_USER", "dialguard"),
        ari_password=os.environ.get("DIALGUARD_ARI_PASSWORD", "dialguard-dev"),
    )


@pytest.fixture(scope="session")
def stack() -> Stack:
    return _stack_from_env()


def _down(part: str, target: str, log: Path, error: object) -> None:
    pytest.fail(f"{part} at {target} does not answer ({error}). Start the stack with `make up` "
                f"(or run `make test`); log: {log}", pytrace=False)


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    """The stack's Redis URL, checked with PING."""
    import redis

    try:
        client = redis.Redis.from_url(stack.redis_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        _down("Redis", stack.redis_url, stack.log("redis"), exc)
    return stack.redis_url


@pytest.fixture(scope="session")
def pg_dsn(stack: Stack) -> str:
    """The stack's PostgreSQL DSN, checked with SELECT 1."""
    import psycopg

    try:
        with psycopg.connect(stack.pg_dsn, connect_timeout=3) as conn:
            conn.execute("select 1").fetchone()
    except Exception as exc:  # noqa: BLE001
        _down("PostgreSQL", stack.pg_dsn, stack.log("pg"), exc)
    return stack.pg_dsn


class Asterisk:
    """The stack's Asterisk: CLI commands and ARI requests."""

    def __init__(self, stack: Stack):
        self.stack = stack

    def rx(self, command: str, timeout: float = 30) -> str:
        """Run one Asterisk CLI command (scripts/astcli.sh) and return its output."""
        out = subprocess.run([str(REPO_ROOT / "scripts" / "astcli.sh"), command], capture_output=True,
                             text=True, timeout=timeout, env={**os.environ, "DIALGUARD_STACK_DIR": str(self.stack.dir)})
        if out.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def ari_get(self, path: str, timeout: float = 5) -> bytes:
        req = urllib.request.Request(self.stack.ari_url + path)
        token = base64.b64encode(f"{self.stack.ari_user}:{self.stack.ari_password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()


@pytest.fixture(scope="session")
def asterisk(stack: Stack) -> Asterisk:
    """The stack's Asterisk, checked through ARI and the CLI."""
    ast = Asterisk(stack)
    try:
        ast.ari_get("/ari/asterisk/info")
        if "fully booted" not in ast.rx("core waitfullybooted", timeout=10):
            raise RuntimeError("not fully booted")
    except Exception as exc:  # noqa: BLE001
        _down("Asterisk", f"{stack.ari_url} / udp 127.0.0.1:{stack.sip_port}", stack.log("asterisk"), exc)
    return ast


@pytest.fixture(scope="session")
def sipp_bin() -> str:
    path = shutil.which("sipp")
    if not path:
        pytest.fail("sipp is not installed (Debian package sip-tester): run `make setup`", pytrace=False)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by suite folder, so `-m integration` / `-m e2e` select them."""
    tests = REPO_ROOT / "tests"
    for item in items:
        path = Path(str(item.fspath)).resolve()
        for suite in ("integration", "e2e"):
            if path.is_relative_to(tests / suite):
                item.add_marker(getattr(pytest.mark, suite))


def pytest_collection_finish(session: pytest.Session) -> None:
    """test_installed_wheel's wheel and venv: built in the background from now on, beside
    the tests before it (tests/e2e/wheel_build.py), when the session runs it."""
    import wheel_build

    if not session.config.getoption("collectonly"):
        wheel_build.start_if_wanted([item.nodeid for item in session.items])


def pytest_runtest_setup(item: pytest.Item) -> None:
    """make test starts its shifted pass at the first e2e test (tests/e2e/shifted_pass.py)."""
    from shifted_pass import e2e_started

    e2e_started(item.get_closest_marker("e2e") is not None)


@pytest.fixture(autouse=True)
def _require_services(request: pytest.FixtureRequest) -> None:
    """Integration and e2e tests need their services answering, whatever fixtures they use."""
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("e2e"):
        request.getfixturevalue("redis_url")
        request.getfixturevalue("pg_dsn")
    if request.node.get_closest_marker("e2e"):
        request.getfixturevalue("asterisk")
        request.getfixturevalue("sipp_bin")
