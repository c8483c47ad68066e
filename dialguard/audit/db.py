"""PostgreSQL connection helpers for the audit (psycopg 3)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from dialguard.config import Settings, _env

ADMIN_ROLE = "dialguard_admin"    # NOLOGIN: owns every object; migrations run as it
WRITER_ROLE = "dialguard_writer"  # NOLOGIN: the service (INSERT + SELECT on audit tables)
READER_ROLE = "dialguard_reader"  # NOLOGIN: reports and investigations (SELECT)
ROLES = (ADMIN_ROLE, WRITER_ROLE, READER_ROLE)

# The migration that creates the audit tables: the shipper waits for it.
AUDIT_SCHEMA_VERSION = 10
CONNECT_TIMEOUT = 5


class SchemaMissing(RuntimeError):
    pass


def service_dsn(settings: Settings | None = None) -> str:
    return (settings or Settings()).pg_dsn


def admin_dsn(settings: Settings | None = None) -> str:
    """DSN for migrations: DIALGUARD_PG_ADMIN_DSN (a superuser, or a role with
    CREATEROLE that may create in schema public), else the service DSN."""
    return _env("DIALGUARD_PG_ADMIN_DSN", "") or service_dsn(settings)


def dsn_user(dsn: str) -> str:
    """The role a DSN logs in as (libpq's default: the OS user)."""
    user = conninfo_to_dict(dsn).get("user") or os.environ.get("PGUSER")
    if user:
        return str(user)
    import getpass

    return getpass.getuser()


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        d = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    host, port, db, user = d.get("host", ""), d.get("port", ""), d.get("dbname", ""), d.get("user", "")
    return f"postgresql://{user}@{host}{':' + str(port) if port else ''}/{db}"


def first_line(exc: BaseException) -> str:
    """A driver error's first line (psycopg adds hints below it), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(dsn: str, **kw) -> psycopg.Connection:
    kw.setdefault("connect_timeout", CONNECT_TIMEOUT)
    kw.setdefault("application_name", "dialguard")
    return psycopg.connect(dsn, **kw)


def schema_version(conn: psycopg.Connection) -> int | None:
    """Highest applied migration, None when the database was never migrated."""
    if conn.execute("select to_regclass('dialguard_migrations')").fetchone()[0] is None:
        return None
    return conn.execute("select max(version) from dialguard_migrations").fetchone()[0]


def require_schema(conn: psycopg.Connection) -> None:
    v = schema_version(conn)
    if v is None or v < AUDIT_SCHEMA_VERSION:
        raise SchemaMissing("the audit tables are missing: run `dialguard db migrate` "
                            "(with DIALGUARD_PG_ADMIN_DSN set to an admin DSN)")


def sql_dirs() -> tuple[Path, ...]:
    """Migration folders, one per component that owns tables: the audit's (sql/ of
    this checkout, or the copy an installed package carries, dialguard/sql) and the
    campaign dialer's (dialguard/campaigns/sql). One runner applies them all in
    version order (the numbers are unique across folders). DIALGUARD_SQL_DIR
    (folders separated by ':') replaces them."""
    if _env("DIALGUARD_SQL_DIR", ""):
        return tuple(Path(p) for p in _env("DIALGUARD_SQL_DIR", "").split(os.pathsep) if p)
    checkout = Path(__file__).resolve().parents[2] / "sql"
    audit = checkout if checkout.is_dir() else Path(__file__).resolve().parents[1] / "sql"
    return audit, Path(__file__).resolve().parents[1] / "campaigns" / "sql"