"""Break-glass: the CLI writing the store directly, off by default (issue 15, point 3).

An admin write from the CLI acts as an authenticated user: with
DIALGUARD_TOKEN it goes through the console's API, where dialguard/authz.py
checks the token's role and the audit names its user. Without a token the
CLI refuses, unless break-glass is on for this run, which takes both:

- the operator's explicit request: `dialguard --break-glass ...` (or
  DIALGUARD_BREAK_GLASS=1 in the command's environment), and
- the guard host allowing it: `DIALGUARD_BREAK_GLASS_ALLOWED=1` in the secrets
  file (DIALGUARD_SECRETS_FILE, mode 0600, owned by the service user or root).
  The switch is read from that file only, never from the environment or the
  config file, so only who may write that file may turn it on.

Every action in break-glass is audited with the actor `break-glass:<OS user>`:
the user of the process's uid (from the OS, not typed), and the user behind
sudo noted when root runs it.
"""

from __future__ import annotations

import os

from dialguard import ids

SWITCH = "DIALGUARD_BREAK_GLASS_ALLOWED"
requested = False  # set by the CLI's --break-glass


class BreakGlassRefused(Exception):
    pass


def _host_allows() -> tuple[bool, str]:
    from dialguard.config import ConfigError, _secret, secrets_file

    path = secrets_file()
    if not path:
        return False, "no secrets file is in use (DIALGUARD_SECRETS_FILE)"
    try:
        st = os.stat(path)
        value = _secret(SWITCH)
    except (OSError, ConfigError) as exc:
        return False, str(exc)
    if st.st_uid not in (0, os.getuid()) and os.getuid() != 0:
        # root may read the service user's file; anyone else only their own or root's
        return False, f"{path} belongs to uid {st.st_uid}, neither root nor this user"
    if (value or "").strip().lower() not in ("1", "yes", "true", "on"):
        return False, f"{SWITCH}=1 is not set in {path}"
    return True, path


def require(what: str) -> str:
    """Allow a direct write to the store, or raise BreakGlassRefused saying what to do.
    Returns the actor the audit will record; from here on ids.actor() says break-glass."""
    if os.environ.get("DIALGUARD_TOKEN"):
        raise BreakGlassRefused(
            f"`dialguard {what}` is not available through the API: unset DIALGUARD_TOKEN and use the "
            "console, or break-glass on the guard host")
    if not (requested or os.environ.get("DIALGUARD_BREAK_GLASS") == "1"):
        raise BreakGlassRefused(
            f"`dialguard {what}` would write the store directly, which is off by default: act as an "
            "authenticated user (set DIALGUARD_TOKEN to a token of `dialguard user token`; the console's API "
            "checks your role and audits your name), or, in an emergency on the guard host, run it with "
            f"`dialguard --break-glass {what}` once {SWITCH}=1 is set in the secrets file (docs/WEB.md)")
    ok, why = _host_allows()
    if not ok:
        raise BreakGlassRefused(f"break-glass refused for `dialguard {what}`: this host does not allow it: "
                                f"{why} (docs/WEB.md, Break-glass)")
    ids.BREAK_GLASS = True
    return ids.actor()
