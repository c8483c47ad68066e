"""The `dialguard` command (typer + rich): the root, which merges each group's
module. Every module under dialguard/cli/ follows one convention: a module-level
`app = typer.Typer()` whose commands (or named sub-groups) are merged here;
shared helpers and exit codes are in common.py.

Modules, by what they operate on:
  admin.py      kill switches, DNC lists, opt-out/complaint/consent, caller IDs
  decide.py     check, simulate
  rules.py      rule packs, rules versions, overrides
  calendar.py   calendars as data
  campaigns.py  campaigns (approval, dialer campaigns, leads), the dialer
  audit.py      database schema, audit shipping and trail, reports, counters
  users.py      console and API users
  init.py       secrets and Redis ACL users
  install.py    install into an existing PBX;  loadtest.py  SIPp load test
  agi.py        a check session against a FastAGI server (agi/client.py)
"""

from __future__ import annotations

import os
import sys

import typer

from dialguard.cli import admin, agi, audit, calendar, campaigns, decide, init, install, loadtest, requests, rules, users
from dialguard.cli.common import EXIT_BAD_INPUT, fail
from dialguard.config import ConfigError, require_secrets
from dialguard.web import cli as web_cli

app = typer.Typer(help="dialguard: outbound-call compliance guard for Asterisk.", no_args_is_help=True,
                  add_completion=False)
for module in (admin, rules, calendar, campaigns, audit, install, loadtest, users, init, decide, agi, requests):
    app.add_typer(module.app)
web_cli.register(app)

# Commands that touch no number and so run without the secrets: `init` makes
# them, `db` manages the schema (a migration that must seal rows asks itself),
# `agi` only hands a number to a FastAGI server (which hashes it with its own).
NO_SECRETS = {"init", "db", "agi"}


@app.callback()
def _main(ctx: typer.Context,
          break_glass: bool = typer.Option(False, "--break-glass",
                                           help="Write the store directly, without a token: only where the "
                                                "host allows it (DIALGUARD_BREAK_GLASS_ALLOWED=1 in the secrets "
                                                "file); audited as break-glass:<OS user>. docs/WEB.md")):
    """Every command but init and db refuses to start without a hash secret and a data key."""
    from dialguard import breakglass, ids

    breakglass.requested = break_glass
    ids.BREAK_GLASS = False  # each command asks again (breakglass.require)
    os.umask(0o077)  # files the CLI writes (exports, checkpoints, rejects, spool) are the owner's only
    if ctx.invoked_subcommand in NO_SECRETS or ctx.resilient_parsing or "--help" in sys.argv[1:]:
        return
    try:
        require_secrets(f"dialguard {ctx.invoked_subcommand}")
    except ConfigError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
