"""`dialguard db migrate`: numbered SQL files, applied once, never edited afterwards.

Each component that owns tables keeps its migrations beside it (the audit's in
sql/, the campaign dialer's in dialguard/campaigns/sql/: audit.db.sql_dirs());
files are named NNN_name.sql, versions unique across the folders, and applied
in version order by this one runner, each in its
own transaction, as the NOLOGIN role dialguard_admin (so every object belongs
to it, not to a login). dialguard_migrations records version, name, SHA-256 and
who applied it; a file whose content changed after it was applied, or an
applied file that disappeared, stops the run before anything new is applied.

Before the files, an idempotent bootstrap creates the roles dialguard_admin,
dialguard_writer and dialguard_reader (NOLOGIN groups) and lets them use schema
public. After them, the service login (the user of DIALGUARD_PG_DSN) is made a
member of dialguard_writer. Creating roles needs a superuser or CREATEROLE:
run migrations with DIALGUARD_PG_ADMIN_DSN pointing at such a login.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import psycopg
from psycopg import sql

from dialguard.audit.db import ADMIN_ROLE, READER_ROLE, ROLES, WRITER_ROLE

FILE_RE = re.compile(r"^(\d{1,9})_([A-Za-z0-9_.-]+)\.sql$")
LOCK_ID = 0x6469616C67  # pg_advisory_lock key: one migrator at a time
HINT = ("run migrations as a superuser, or a login with CREATEROLE that owns the database: set "
        "DIALGUARD_PG_ADMIN_DSN (dev stack: postgresql://postgres@127.0.0.1:15432/dialguard)")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class Applied:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    applied_by: str


@dataclass
class Status:
    applied: list[Applied] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    changed: list[tuple[Migration, Applied]] = field(default_factory=list)
    missing: list[Applied] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.changed and not self.missing

    def problems(self) -> list[str]:
        out = [f"{m.filename} was changed after it was applied on {a.applied_at:%Y-%m-%d %H:%M} "
               f"(checksum {a.checksum[:12]} then, {m.checksum[:12]} now): applied migrations are "
               f"never edited; restore it and write a new migration" for m, a in self.changed]
        out += [f"migration {a.version:03d}_{a.name}.sql was applied but is not in the migrations "
                f"folder (wrong checkout?)" for a in self.missing]
        return out


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def discover(directories: Path | Iterable[Path]) -> list[Migration]:
    """The migrations of one folder or of several (one per component), by version."""
    dirs = [directories] if isinstance(directories, Path) else list(directories)
    found: dict[int, Migration] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise MigrationError(f"{directory}: no migrations folder (set DIALGUARD_SQL_DIR)")
        for p in sorted(directory.glob("*.sql")):
            m = FILE_RE.match(p.name)
            if not m:
                raise MigrationError(f"{p}: migration files are named NNN_name.sql")
            v = int(m.group(1))
            if v in found:
                raise MigrationError(f"{p.name} and {found[v].filename}: two migrations with version {v}")
            found[v] = Migration(v, m.group(2), p, checksum(p))
    return [found[v] for v in sorted(found)]


def read_applied(conn: psycopg.Connection) -> list[Applied]:
    if conn.execute("select to_regclass('dialguard_migrations')").fetchone()[0] is None:
        return []
    rows = conn.execute("select version, name, checksum, applied_at, applied_by from dialguard_migrations "
                        "order by version").fetchall()
    return [Applied(*r) for r in rows]


def compare(migrations: Iterable[Migration], applied: Iterable[Applied]) -> Status:
    st = Status(applied=list(applied))
    by_version = {a.version: a for a in st.applied}
    files = {m.version: m for m in migrations}
    for v, m in files.items():
        a = by_version.get(v)
        if a is None:
            st.pending.append(m)
        elif a.checksum != m.checksum:
            st.changed.append((m, a))
    st.missing = [a for v, a in by_version.items() if v not in files]
    return st


def status(conn: psycopg.Connection, directory: Path | Iterable[Path]) -> Status:
    return compare(discover(directory), read_applied(conn))


def _one(conn, query, *args):
    return conn.execute(query, args).fetchone()[0]


def bootstrap(conn: psycopg.Connection) -> None:
    """Roles, schema privileges and the migrations table (idempotent)."""
    with conn.transaction():
        superuser = _one(conn, "select rolsuper from pg_roles where rolname = current_user")
        for role in ROLES:
            if not _one(conn, "select count(*) from pg_roles where rolname = %s", role):
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
                except psycopg.errors.InsufficientPrivilege:
                    raise MigrationError(f"role {role} does not exist and "
                                         f"{_one(conn, 'select current_user')} may not create it: {HINT}") from None
        admin = sql.Identifier(ADMIN_ROLE)
        if not superuser and not _one(conn, "select pg_has_role(current_user, %s, 'MEMBER')", ADMIN_ROLE):
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("grant {} to current_user").format(admin))
            except psycopg.errors.InsufficientPrivilege:
                raise MigrationError(f"{_one(conn, 'select current_user')} is not a member of {ADMIN_ROLE} and "
                                     f"may not become one: {HINT}") from None
        db = sql.Identifier(_one(conn, "select current_database()"))
        wanted = [(ADMIN_ROLE, "USAGE, CREATE", ("USAGE", "CREATE")),
                  (WRITER_ROLE, "USAGE", ("USAGE",)), (READER_ROLE, "USAGE", ("USAGE",))]
        for role, privs, check in wanted:
            if not all(_one(conn, "select has_schema_privilege(%s, 'public', %s)", role, p) for p in check):
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("grant {} on schema public to {}").format(
                            sql.SQL(privs), sql.Identifier(role)))
                except psycopg.errors.InsufficientPrivilege:
                    raise MigrationError(f"cannot grant {privs} on schema public to {role}: {HINT}") from None
        for role in (WRITER_ROLE, READER_ROLE):
            if not _one(conn, "select has_database_privilege(%s, current_database(), 'CONNECT')", role):
                conn.execute(sql.SQL("grant connect on database {} to {}").format(db, sql.Identifier(role)))
        conn.execute(sql.SQL("set local role {}").format(admin))
        conn.execute("""
            create table if not exists dialguard_migrations (
                version     integer primary key,
                name        text not null,
                checksum    text not null,
                applied_at  timestamptz not null default now(),
                applied_by  text not null default session_user
            )""")
        conn.execute(sql.SQL("grant select on dialguard_migrations to {}, {}").format(
            sql.Identifier(WRITER_ROLE), sql.Identifier(READER_ROLE)))


def grant_member(conn: psycopg.Connection, group: str, login: str) -> bool:
    """Make login a member of group; False if it already was."""
    with conn.transaction():
        if not _one(conn, "select count(*) from pg_roles where rolname = %s", login):
            raise MigrationError(f"login role {login!r} does not exist (create it, then migrate again)")
        if _one(conn, "select count(*) from pg_auth_members m join pg_roles g on g.oid = m.roleid "
                      "join pg_roles u on u.oid = m.member where g.rolname = %s and u.rolname = %s",
                group, login):
            return False
        try:
            with conn.transaction():
                conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(login)))
        except psycopg.errors.InsufficientPrivilege:
            raise MigrationError(f"cannot grant {group} to {login}: {HINT}") from None
        return True


def migrate(conn: psycopg.Connection, directory: Path | Iterable[Path], *, writers: Iterable[str] = (),
            readers: Iterable[str] = (), say: Callable[[str], None] = lambda s: None) -> list[Migration]:
    """Apply pending migrations (each in its own transaction); returns those applied.

    Up to date and memberships in place: nothing is written, so any login that
    can read dialguard_migrations may run it. Otherwise the login needs to be
    able to create roles and objects (a superuser, or CREATEROLE + database owner).
    """
    migrations = discover(directory)
    st = compare(migrations, _applied_or_none(conn))
    if not st.ok:
        raise MigrationError("; ".join(st.problems()))
    done: list[Migration] = []
    if st.pending:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_ID,))
        conn.commit()
        try:
            bootstrap(conn)
            st = compare(migrations, read_applied(conn))  # another migrator may have run meanwhile
            if not st.ok:
                raise MigrationError("; ".join(st.problems()))
            for m in st.pending:
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(ADMIN_ROLE)))
                        conn.execute(m.text)
                        conn.execute("insert into dialguard_migrations (version, name, checksum) "
                                     "values (%s, %s, %s)", (m.version, m.name, m.checksum))
                except psycopg.Error as exc:
                    where = (exc.diag.context or "").splitlines()[:1]
                    raise MigrationError(f"{m.filename}: {exc.diag.message_primary or exc}"
                                         f"{' (' + where[0] + ')' if where else ''}; "
                                         "nothing of this file was applied") from None
                say(f"applied {m.filename}")
                done.append(m)
        finally:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_ID,))
            conn.commit()
    seal_plaintext_leads(conn, say)
    for group, logins in ((WRITER_ROLE, writers), (READER_ROLE, readers)):
        for login in logins:
            if grant_member(conn, group, login):
                say(f"granted {group} to {login}")
    return done


def _applied_or_none(conn: psycopg.Connection) -> list[Applied]:
    try:
        with conn.transaction():
            return read_applied(conn)
    except psycopg.errors.InsufficientPrivilege:
        return []  # not readable by this login: bootstrap will tell whether it may migrate


def seal_plaintext_leads(conn: psycopg.Connection, say: Callable[[str], None] = lambda s: None) -> int:
    """Leads written before dialguard/campaigns/sql/090 still hold their number in clear: hash and
    seal them (keys from the environment or secrets file: SQL has none), clear
    `number`, validate the constraint that keeps it clear, and rewrite the
    table (VACUUM FULL) so no dead row version keeps the plaintext. Returns how
    many rows were sealed; nothing to do costs one query."""
    with conn.transaction():
        has = _one(conn, "select count(*) from information_schema.columns where table_name = 'dialer_leads' "
                         "and column_name = 'number_enc'")
        if not has:
            return 0
        n = _one(conn, "select (select count(*) from dialer_leads where number is not null)"
                       " + (select count(*) from dialer_calls where caller_id is not null)")
        validated = _one(conn, "select bool_and(convalidated) from pg_constraint"
                               " where conname in ('dialer_leads_sealed', 'dialer_calls_sealed')")
    if not n and validated:
        return 0
    from dialguard.campaigns.store import lead_number_hash
    from dialguard.config import Settings, require_secrets
    from dialguard.crypto import Sealer

    if n:
        try:
            require_secrets(f"sealing {n} plaintext dialer leads")
        except ValueError as exc:
            raise MigrationError(str(exc)) from None
    secret, sealer = (Settings().hash_secret, Sealer()) if n else (b"", None)
    with conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(ADMIN_ROLE)))
        rows = conn.execute("select id, number from dialer_leads where number is not null for update").fetchall()
        calls = conn.execute("select channel_id, caller_id from dialer_calls where caller_id is not null"
                             " for update").fetchall()
        with conn.cursor() as cur:
            cur.executemany("update dialer_leads set number_hash = %s, number_enc = %s, number = null where id = %s",
                            [(lead_number_hash(secret, num), sealer.seal(num), i) for i, num in rows])
            cur.executemany("update dialer_calls set caller_id_enc = %s, caller_id = null where channel_id = %s",
                            [(sealer.seal(cid), ch) for ch, cid in calls])
        conn.execute("alter table dialer_leads validate constraint dialer_leads_sealed")
        conn.execute("alter table dialer_calls validate constraint dialer_calls_sealed")
    if rows or calls:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ADMIN_ROLE)))
        autocommit = conn.autocommit
        conn.commit()
        conn.autocommit = True
        try:
            conn.execute("vacuum full dialer_leads")
            conn.execute("vacuum full dialer_calls")
        finally:
            conn.autocommit = autocommit
            conn.execute("reset role")
        say(f"sealed {len(rows)} dialer leads (number_hash + number_enc) and {len(calls)} calls' caller IDs; "
            "tables rewritten")
    return len(rows) + len(calls)
