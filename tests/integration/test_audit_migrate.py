"""`dialguard db migrate` on a real PostgreSQL (a cluster of this module's own):
empty and migrated databases, a changed applied migration refused, roles and
the append-only audit tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from dialguard.audit import migrate as m
from dialguard.audit.db import sql_dirs
from fakes.pg import PgCluster

AUDIT_TABLES = ("audit_decisions", "audit_outcomes", "audit_events", "audit_overrides", "audit_admin_actions",
                "audit_campaigns", "audit_caller_ids", "audit_rejects", "audit_rules_versions")
SERVICE = "dg_service"
READER = "dg_report"


@pytest.fixture(scope="module")
def cluster():
    c = PgCluster().init()
    c.start()
    c.create_login(SERVICE)
    c.create_login(READER)
    yield c
    c.destroy()


@pytest.fixture
def db(cluster):
    name = f"dgm_{uuid.uuid4().hex[:8]}"
    cluster.create_db(name)
    return name


def copy_migrations(d):
    """Every component's migrations in one folder (the runner takes one or several)."""
    d.mkdir()
    for f in (f for src in sql_dirs() for f in src.glob("*.sql")):
        shutil.copy(f, d / f.name)


def migrate_as_admin(cluster, db, directory=None, **kw):
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        return m.migrate(conn, directory or sql_dirs(), writers=[SERVICE], readers=[READER], **kw)


def migrate_before(cluster, db, tmp_path, version: int) -> None:
    """The database as a release before migration `version` left it."""
    old = tmp_path / "sql"
    old.mkdir()
    for f in (f for d in sql_dirs() for f in d.glob("*.sql")):
        if int(f.name.split("_")[0]) < version:
            shutil.copy(f, old / f.name)
    migrate_as_admin(cluster, db, old)


def test_empty_then_migrated_database(cluster, db):
    files = m.discover(sql_dirs())
    done = migrate_as_admin(cluster, db)
    assert [x.version for x in done] == [x.version for x in files]
    assert 10 in [x.version for x in done]
    owners = dict(cluster.sql("select tablename, tableowner from pg_tables where schemaname = 'public'", db))
    for t in AUDIT_TABLES + ("dialguard_migrations",):
        assert owners[t] == "dialguard_admin", t
    applied = cluster.sql("select version, checksum, applied_by from dialguard_migrations order by version", db)
    assert [(v, c) for v, c, _ in applied] == [(x.version, x.checksum) for x in files]
    assert {by for _, _, by in applied} == {"postgres"}
    # a migrated database: nothing to do, nothing changes
    assert migrate_as_admin(cluster, db) == []
    assert cluster.sql("select count(*) from dialguard_migrations", db)[0][0] == len(files)
    # the service login may run it too once nothing is pending (no privilege needed)
    with psycopg.connect(cluster.dsn(db, SERVICE), autocommit=True) as conn:
        assert m.migrate(conn, sql_dirs()) == []


def test_changed_applied_migration_is_refused(cluster, db, tmp_path):
    d = tmp_path / "sql"
    copy_migrations(d)
    migrate_as_admin(cluster, db, d)
    (d / "010_audit.sql").write_text((d / "010_audit.sql").read_text() + "\n-- edited afterwards\n")
    (d / "900_new.sql").write_text("create table later_table (x int);\n")
    with pytest.raises(m.MigrationError, match=r"010_audit.sql was changed after it was applied"):
        migrate_as_admin(cluster, db, d)
    assert cluster.sql("select to_regclass('later_table')", db)[0][0] is None  # nothing new applied
    st = m.status(psycopg.connect(cluster.dsn(db), autocommit=True), d)
    assert not st.ok and [p.filename for p in st.pending] == ["900_new.sql"]
    # an applied migration that disappeared is refused as well
    (d / "010_audit.sql").unlink()
    with pytest.raises(m.MigrationError, match="applied but is not in the migrations folder"):
        migrate_as_admin(cluster, db, d)


def test_failed_migration_applies_nothing_of_itself(cluster, db, tmp_path):
    d = tmp_path / "sql"
    copy_migrations(d)
    (d / "901_broken.sql").write_text("create table half_done (x int);\nselect no_such_function();\n")
    with pytest.raises(m.MigrationError, match="901_broken.sql"):
        migrate_as_admin(cluster, db, d)
    assert cluster.sql("select to_regclass('half_done')", db)[0][0] is None
    assert cluster.sql("select max(version) from dialguard_migrations", db)[0][0] < 901


def test_unprivileged_login_cannot_migrate_an_empty_database(cluster):
    name = f"dgm_{uuid.uuid4().hex[:8]}"
    cluster.create_login("dg_nobody")
    cluster.create_db(name, owner="dg_nobody")
    with psycopg.connect(cluster.dsn(name, "dg_nobody"), autocommit=True) as conn:
        with pytest.raises(m.MigrationError, match="DIALGUARD_PG_ADMIN_DSN"):
            m.migrate(conn, sql_dirs())
    assert cluster.sql("select to_regclass('audit_decisions')", name)[0][0] is None


def test_service_role_may_insert_and_select_never_update_or_delete(cluster, db):
    migrate_as_admin(cluster, db)
    with psycopg.connect(cluster.dsn(db, SERVICE), autocommit=True) as conn:
        conn.execute("insert into audit_campaigns (name, tag) values ('c1', 't1')")
        conn.execute("""insert into audit_decisions (decision_id, stream_id, decided_at, recorded_at, allowed,
                        number_hash, campaign, agent, request) values ('d1', '1-0', now(), now(), true, 'h', 'c1',
                        'a1', '{}')""")
        assert conn.execute("select count(*) from audit_decisions").fetchone()[0] == 1
        for t in AUDIT_TABLES:
            for stmt in (f"update {t} set stream_id = stream_id" if t not in ("audit_campaigns", "audit_caller_ids")
                         else f"update {t} set tag = tag", f"delete from {t}", f"truncate {t}"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    conn.execute(stmt)
        # the dialer's working tables (later migrations) are ordinary state: the service changes them
        conn.execute("insert into dialer_campaigns (name) values ('dial-1')")
        conn.execute("update dialer_campaigns set state = 'paused' where name = 'dial-1'")
        conn.execute("delete from dialer_campaigns where name = 'dial-1'")
    with psycopg.connect(cluster.dsn(db, READER), autocommit=True) as conn:
        assert conn.execute("select count(*) from audit_decisions").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into audit_campaigns (name, tag) values ('c2', 't2')")


def test_trigger_refuses_update_and_delete_even_for_the_owner(cluster, db):
    migrate_as_admin(cluster, db)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:  # superuser: grants do not apply
        conn.execute("insert into audit_campaigns (name, tag) values ('c1', 't1')")
        for stmt in ("update audit_campaigns set tag = 'x'", "delete from audit_campaigns",
                     "truncate audit_campaigns"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(stmt)
        conn.execute("set role dialguard_admin")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("update audit_campaigns set tag = 'x'")
        # the explicit retention purge of an admin (docs/AUDIT.md): DELETE only, never UPDATE
        with conn.transaction():
            conn.execute("set local dialguard.audit_purge = 'on'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                with conn.transaction():
                    conn.execute("update audit_campaigns set tag = 'x'")
            conn.execute("delete from audit_campaigns where name = 'c1'")
        assert conn.execute("select count(*) from audit_campaigns").fetchone()[0] == 0


def test_each_component_owns_its_migrations_one_runner_applies_them():
    """The dialer's tables come from dialguard/campaigns/sql, the audit's from sql/;
    one runner, one version order across both; a version used twice is refused."""
    audit, dialer = sql_dirs()
    assert dialer.parts[-3:] == ("dialguard", "campaigns", "sql")
    assert {f.name for f in dialer.glob("*.sql")} >= {"050_dialer_campaigns.sql", "090_dialer_leads_sealed.sql"}
    assert not [f for f in audit.glob("*.sql") if "dialer" in f.name]
    versions = [x.version for x in m.discover(sql_dirs())]
    assert versions == sorted(versions) and {10, 50, 90} <= set(versions)


def test_a_version_in_two_component_folders_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "500_x.sql").write_text("select 1;\n")
    (b / "500_y.sql").write_text("select 1;\n")
    with pytest.raises(m.MigrationError, match="two migrations with version 500"):
        m.discover([a, b])


def test_rules_shadow_migration_over_a_database_migrated_before_it(cluster, db, tmp_path):
    """030 (rules versions, shadow columns) applied to a database that already has
    the later files too: rows kept, new columns NULL, the new table append-only."""
    d = tmp_path / "sql"
    copy_migrations(d)
    (d / "030_rules_shadow.sql").unlink()
    migrate_as_admin(cluster, db, d)
    cluster.sql("""insert into audit_decisions (decision_id, stream_id, decided_at, recorded_at, allowed,
                   number_hash, campaign, agent, request) values ('old', '1-0', now(), now(), true, 'h', 'c1',
                   'a1', '{}')""", db)
    done = migrate_as_admin(cluster, db)
    assert [x.version for x in done] == [30]
    assert cluster.sql("select rules_seq, shadow_version, shadow_allowed, shadow_reasons, override_lifted "
                       "from audit_decisions where decision_id = 'old'", db) == [(None,) * 5]
    cluster.sql("""insert into audit_rules_versions (record_id, stream_id, version, mode, at, recorded_at, payload)
                   values ('r1', '1-0', 1, 'active', now(), now(), '{}')""", db)
    for stmt in ("update audit_rules_versions set why = 'x'", "delete from audit_rules_versions"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            cluster.sql(stmt, db)  # as the superuser: the trigger, not grants
    with pytest.raises(psycopg.errors.CheckViolation):
        cluster.sql("""insert into audit_rules_versions (record_id, stream_id, version, mode, at, recorded_at,
                       payload) values ('r2', '1-0', 1, 'dry-run', now(), now(), '{}')""", db)


def test_cli_migrate_and_status(cluster, db):
    env = {**os.environ, "DIALGUARD_PG_ADMIN_DSN": cluster.dsn(db), "DIALGUARD_PG_DSN": cluster.dsn(db, SERVICE)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "dialguard.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=120)
    r = run("db", "migrate")
    assert r.returncode == 0, r.stderr
    assert "applied 010_audit.sql" in r.stdout
    assert cluster.sql(f"select pg_has_role('{SERVICE}', 'dialguard_writer', 'MEMBER')", db)[0][0]
    r = run("db", "migrate")
    assert r.returncode == 0 and "up to date" in r.stdout
    r = run("db", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert '"pending": []' in r.stdout
    # without an admin DSN, an unmigrated database names what to do
    other = cluster.create_db(f"dgm_{uuid.uuid4().hex[:8]}", owner=SERVICE)
    r = subprocess.run([sys.executable, "-m", "dialguard.cli", "db", "migrate"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DIALGUARD_PG_ADMIN_DSN": "",
                                         "DIALGUARD_PG_DSN": cluster.dsn(other, SERVICE)})
    assert r.returncode == 2 and "DIALGUARD_PG_ADMIN_DSN" in r.stderr + r.stdout


def test_090_seals_plaintext_leads_and_dedups_by_hash(cluster, db, tmp_path):
    """Leads written before 090 hold plaintext numbers: migrating seals them
    (hash + sealed number, number NULL, table rewritten), and the unique key is
    the hash from then on."""
    from dialguard.campaigns.store import lead_number_hash
    from dialguard.config import Settings
    from dialguard.crypto import Sealer

    migrate_before(cluster, db, tmp_path, 90)
    nums = ["+8613800138000", "+8613800138001"]
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        c.execute("insert into dialer_campaigns (name) values ('c1')")
        for n in nums:
            c.execute("insert into dialer_leads (campaign, number, subject) values ('c1', %s, 's')", (n,))
        c.execute("insert into dialer_calls (channel_id, lead_id, campaign, caller_id) select 'ch1', min(id), 'c1',"
                  " '+861050000001' from dialer_leads")
    said = []
    migrate_as_admin(cluster, db, say=said.append)
    assert any("sealed 2 dialer leads" in s and "1 calls' caller IDs" in s for s in said), said
    secret, sealer = Settings().hash_secret, Sealer()
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        rows = c.execute("select number, number_hash, number_enc from dialer_leads order by id").fetchall()
        assert [r[0] for r in rows] == [None, None]
        assert [sealer.open(r[2]) for r in rows] == nums
        assert [r[1] for r in rows] == [lead_number_hash(secret, n) for n in nums]
        assert c.execute("select bool_and(convalidated) from pg_constraint"
                         " where conname in ('dialer_leads_sealed', 'dialer_calls_sealed')").fetchone()[0]
        cid, enc = c.execute("select caller_id, caller_id_enc from dialer_calls").fetchone()
        assert cid is None and sealer.open(enc) == "+861050000001"
        # plaintext can no longer be written; the same number twice is refused by its hash
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute("insert into dialer_leads (campaign, number, number_hash, number_enc, subject) "
                      "values ('c1', '+8613800138009', 'h', 'e', 's')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("insert into dialer_leads (campaign, number_hash, number_enc, subject) values ('c1', %s, %s, 's')",
                      (rows[0][1], sealer.seal(nums[0])))
    # a second run has nothing to do
    said.clear()
    migrate_as_admin(cluster, db, say=said.append)
    assert not any("sealed" in s for s in said)


def test_250_marks_the_abandoned_calls_of_before_as_the_dialplans_once(cluster, db, tmp_path):
    """Before 250 an abandoned call with no message state was counted as played by the
    dialplan: migrating marks those rows so (the count kept), and only those; a row
    written after it with no state stays unmarked (`unknown` in campaign status)."""
    migrate_before(cluster, db, tmp_path, 250)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        c.execute("insert into dialer_campaigns (name) values ('c1')")
        c.execute("insert into dialer_leads (campaign, number_hash, number_enc, subject) values ('c1', 'h', 'e', 's')")
        for cid, result, state in (("a", "abandoned", None), ("b", "abandoned", "played"), ("c", "no_answer", None)):
            c.execute("insert into dialer_calls (channel_id, lead_id, campaign, result, message_state)"
                      " select %s, min(id), 'c1', %s, %s from dialer_leads", (cid, result, state))
    # a dialer of this version refuses the database at its start, naming the file to apply
    import asyncio

    from dialguard.campaigns.store import SchemaMissing, Store

    with pytest.raises(SchemaMissing, match="250_dialer_call_message_by_dialplan.sql"):
        asyncio.run(Store.open(cluster.dsn(db)))
    done = migrate_as_admin(cluster, db)
    assert [x.version for x in done if x.version <= 250] == [250]
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        c.execute("insert into dialer_calls (channel_id, lead_id, campaign, result)"
                  " select 'd', min(id), 'c1', 'abandoned' from dialer_leads")
        marks = dict(c.execute("select channel_id, message_by_dialplan from dialer_calls").fetchall())
    assert marks == {"a": True, "b": False, "c": False, "d": False}, marks


def test_260_lets_a_lead_be_held_for_an_unknown_calendar_year(cluster, db, tmp_path):
    """Before 260 dialer_holds refused the reason `calendar_unknown`: a dialer of this
    version refuses such a database at its start, naming the file; after it, the hold
    is recorded."""
    import asyncio

    from dialguard.campaigns.store import SchemaMissing, Store

    migrate_before(cluster, db, tmp_path, 260)
    with pytest.raises(SchemaMissing, match="260_dialer_holds_calendar_unknown.sql"):
        asyncio.run(Store.open(cluster.dsn(db)))
    assert [x.version for x in migrate_as_admin(cluster, db)] == [260]
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        c.execute("insert into dialer_holds (campaign, reason, detail, lead_id, leads, started_at)"
                  " values ('c1', 'calendar_unknown', 'CN 2027', 1, 1, now())")
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute("insert into dialer_holds (campaign, reason, started_at) values ('c1', 'surprise', now())")
