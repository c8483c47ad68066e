"""Record ids and who runs an admin command: shared by the engine and the stores
(rules, calendars) without importing one another."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """Time-ordered unique id: 12 hex of ms + 16 hex random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


BREAK_GLASS = False  # set by dialguard.breakglass.require (the CLI's --break-glass, allowed by the host)


def os_user() -> str:
    """The user of this process's uid, from the OS (not USER or DIALGUARD_ACTOR, which anyone may
    type); when root runs it through sudo, the sudo user is noted beside it."""
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    if uid == 0 and os.environ.get("SUDO_USER"):
        name += f"(sudo:{os.environ['SUDO_USER']})"
    return name


def actor() -> str:
    """Who runs an admin command without an authenticated identity: `break-glass:<OS user>`
    in break-glass (the CLI), else `os:<OS user>` (a process of the guard host itself)."""
    return ("break-glass:" if BREAK_GLASS else "os:") + os_user()
