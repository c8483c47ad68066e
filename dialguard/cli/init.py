"""`dialguard init`: the installation's secrets, generated, never built in.

Writes into --dir (default /etc/dialguard), each file mode 0600 and created
only when missing (a new hash secret orphans every counter, a new data key
leaves every sealed number unreadable):

    secrets.env          DIALGUARD_HASH_SECRET, DIALGUARD_DATA_KEY
    redis-<role>.env     DIALGUARD_REDIS_USER, DIALGUARD_REDIS_PASSWORD of one role
                         (guard, dialer, shipper, admin: dialguard/redis_acl.py)
    redis-default.env    the default user's (Redis' superuser): for the Redis
                         administrator only, never for a dialguard component
    redis-users.acl      Redis `aclfile`: the default user behind that password, the role users
                         with their passwords' SHA-256 (rewritten from the role files)

Services read secrets.env through systemd's EnvironmentFile (deploy/systemd/)
or DIALGUARD_SECRETS_FILE; each unit also loads its own redis-<role>.env.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Optional

import typer

from dialguard.cli.common import fail
from dialguard.config import parse_env_file
from dialguard.redis_acl import ROLES, acl_file, setuser_line, username


def _write_private(path: Path, text: str, owner: str | None) -> None:
    """Create path with mode 0600 (never readable by others, whatever the umask)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner:
            import pwd

            pw = pwd.getpwnam(owner)
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def generate(directory: Path, *, secrets_file: Path | None = None, prefix: str = "dg",
             owner: str | None = None, redis_owner: str | None = None) -> dict[str, list[Path]]:
    """Create the missing files; {'created': [...], 'kept': [...]}."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[Path] = []
    kept: list[Path] = []
    sf = secrets_file or directory / "secrets.env"
    if sf.exists():
        kept.append(sf)
    else:
        sf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(sf, "# dialguard secrets (dialguard init). Keep apart from database backups.\n"
                           f"DIALGUARD_HASH_SECRET={secrets.token_hex(32)}\n"
                           f"DIALGUARD_DATA_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}\n", owner)
        created.append(sf)
    passwords = {}
    for role in (*ROLES, "default"):
        f = directory / f"redis-{role}.env"
        if f.exists():
            passwords[role] = parse_env_file(f.read_text()).get("DIALGUARD_REDIS_PASSWORD", "")
            if not passwords[role]:
                raise ValueError(f"{f}: no DIALGUARD_REDIS_PASSWORD (delete it to generate a new one)")
            kept.append(f)
            continue
        passwords[role] = secrets.token_urlsafe(32)
        _write_private(f, f"# Redis ACL user of the {role} role (dialguard init)\n"
                          f"DIALGUARD_REDIS_USER={'default' if role == 'default' else username(role)}\n"
                          f"DIALGUARD_REDIS_PASSWORD={passwords[role]}\n", owner)
        created.append(f)
    acl = directory / "redis-users.acl"
    _write_private(acl, acl_file(passwords, prefix), redis_owner)
    created.append(acl)
    return {"created": created, "kept": kept, "passwords": passwords}


app = typer.Typer()


@app.command("init")
def init(
    directory: Path = typer.Option(Path("/etc/dialguard"), "--dir", help="where the files go"),
    secrets_file: Optional[Path] = typer.Option(None, "--secrets-file",
                                                help="hash secret and data key file (default DIR/secrets.env)"),
    prefix: str = typer.Option(os.environ.get("DIALGUARD_KEY_PREFIX", "dg"), "--prefix",
                               help="Redis key prefix the ACL users are confined to"),
    owner: Optional[str] = typer.Option(None, "--owner", help="owner of the secrets (the service user; "
                                                              "default: whoever runs init)"),
    redis_owner: Optional[str] = typer.Option(None, "--redis-owner", help="owner of redis-users.acl "
                                                                          "(the redis user)"),
):
    """Generate the hash secret, the data key and one Redis ACL user per role (files 0600, kept if present)."""
    try:
        res = generate(directory, secrets_file=secrets_file, prefix=prefix, owner=owner,
                       redis_owner=redis_owner)
    except (OSError, ValueError, KeyError) as exc:
        fail(str(exc))
    for p in res["kept"]:
        typer.echo(f"kept     {p} (exists: never overwritten)")
    for p in res["created"]:
        typer.echo(f"written  {p} (0600)")
    typer.echo("Redis: `aclfile` " + str(directory / "redis-users.acl") + " in redis.conf, or these lines "
               "in redis-cli (passwords as SHA-256):")
    for role in ROLES:
        typer.echo("  " + setuser_line(role, prefix, res["passwords"][role]))
