"""Integration fixtures: the stack's real Redis (and PostgreSQL), never a fake.

A missing service is a failure, not a skip: `make up` provides it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis as syncredis

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.rules import Policy, load_pack_file
from dialguard.simulate import _drop_namespace


@pytest.fixture(scope="session")
def settings() -> Settings:
    s = Settings()
    try:
        syncredis.Redis.from_url(s.redis_url, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis at {s.redis_url} does not answer ({exc}); run `make up` first")
    return s


@pytest.fixture
async def make_engine(settings):
    """Engines on the real Redis, each in its own namespace, dropped afterwards."""
    made: list[Engine] = []

    async def factory(policy: Policy | str = "cn-default", **kw) -> Engine:
        if isinstance(policy, str):
            policy = Policy.load(policy)
        kw.setdefault("prefix", f"dgtest:{uuid.uuid4().hex[:10]}")
        e = await Engine.create(kw.pop("settings", settings), policy, **kw)
        made.append(e)
        return e

    yield factory
    for e in made:
        try:
            await _drop_namespace(e.redis, e.keys.prefix)
        finally:
            await e.close()


@pytest.fixture
def rules_file(tmp_path):
    def write(text: str) -> Policy:
        p = tmp_path / f"r{uuid.uuid4().hex[:6]}.yaml"
        p.write_text(text)
        return Policy([load_pack_file(p)])

    return write


OPEN_PACK = """pack: {name}
version: "1"
default_region: CN
hours:
  zone: callee
  weekly: {{all: ["00:00-24:00"]}}
caps:
  - {{id: per-day, max: {cap}, window: {{rolling: 24h}}, scope: number}}
"""


@pytest.fixture
def open_pack(tmp_path):
    """A rules file open all day with at most `cap` attempts per number per rolling 24 h."""
    def write(name: str, cap: int) -> str:
        p = tmp_path / f"{name}.yaml"
        p.write_text(OPEN_PACK.format(name=name, cap=cap))
        return str(p)
    return write


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL cluster of the test module's own (it may stop and restart it),
    with the service login `dg_service`."""
    from fakes.pg import PgCluster

    c = PgCluster().init()
    c.start()
    c.create_login("dg_service")
    yield c
    c.destroy()


@pytest.fixture
def audit_db(cluster):
    """A migrated database of its own in the module's cluster; returns the service DSN."""
    import psycopg

    from dialguard.audit import migrate
    from dialguard.audit.db import sql_dirs

    if not cluster.running():  # a test of the module may have stopped it
        cluster.start()
    # migrated once per cluster, then copied (CREATE DATABASE ... TEMPLATE: the same
    # tables, owners and grants) for each test: migrating took about 1 s a test
    # (tests/integration/test_audit_migrate.py tests the migrations themselves)
    template = "dga_migrated"
    if not cluster.sql(f"select 1 from pg_database where datname = '{template}'"):
        building = cluster.create_db(f"dga_{uuid.uuid4().hex[:8]}")  # renamed once complete
        with psycopg.connect(cluster.dsn(building), autocommit=True) as conn:
            migrate.migrate(conn, sql_dirs(), writers=["dg_service"])
        cluster.sql(f'alter database "{building}" rename to "{template}"')
    name = f"dga_{uuid.uuid4().hex[:8]}"
    cluster.sql(f'create database "{name}" template "{template}"')
    return cluster.dsn(name, "dg_service")
