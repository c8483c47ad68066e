"""`dialguard install asterisk`: put the guard's dialplan into an existing
Asterisk configuration folder without touching the admin's other files.

Written by us (replaced when the package's copy changes):
  extensions_dialguard.conf           the guarded dial and the check subroutine
  extensions_dialguard_freepbx.conf   the FreePBX recipe (docs/FREEPBX.md)
  extensions_dialguard_vicidial.conf  the VICIdial recipe (docs/VICIDIAL.md)
Written once, then the admin's (never replaced):
  extensions_dialguard_globals.conf   the DIALGUARD_* globals, to include in [globals]
The admin's extensions.conf is changed only when asked (apply_includes=True):
the globals include goes right after its [globals] line, the dialplan include
at the end; a line already there is never added twice.

Every change is planned first (Change: path, old and new text) so the caller
can show a unified diff, and applied atomically (temporary file + rename).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

OURS = ("extensions_dialguard.conf", "extensions_dialguard_freepbx.conf", "extensions_dialguard_vicidial.conf")
GLOBALS = "extensions_dialguard_globals.conf"
INCLUDE_DIALPLAN = "#include extensions_dialguard.conf"
INCLUDE_GLOBALS = "#include extensions_dialguard_globals.conf"
_AGI_URL = re.compile(r"^agi://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class InstallError(ValueError):
    """A bad argument or a configuration folder we cannot work in."""


@dataclass(frozen=True)
class Change:
    path: Path
    old: str | None  # None: the file does not exist yet
    new: str
    note: str

    def diff(self) -> str:
        old = [] if self.old is None else self.old.splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, self.new.splitlines(keepends=True),
                                            fromfile=str(self.path) if self.old is not None else "/dev/null",
                                            tofile=str(self.path)))


def packaged(name: str) -> str:
    """A dialplan file as the installed package carries it."""
    return resources.files("dialguard").joinpath("asterisk", name).read_text()


def globals_text(agi_url: str) -> str:
    if not _AGI_URL.match(agi_url):
        raise InstallError(f"--agi-url {agi_url!r}: expected agi://HOST:PORT (the FastAGI server)")
    return (
        "; dialguard globals (written once by `dialguard install asterisk`; yours to edit).\n"
        "; Include it inside [globals]: extensions.conf  [globals] + #include extensions_dialguard_globals.conf\n"
        "; (FreePBX: add the include line to globals_custom.conf).\n"
        f"DIALGUARD_AGI = {agi_url}\n"
        "; PJSIP endpoint of the carrier and ring time, for dialguard-dial:\n"
        "DIALGUARD_TRUNK = carrier\n"
        "DIALGUARD_DIAL_TIMEOUT = 30\n"
        "; Campaign when the dialplan names none (FreePBX route without\n"
        "; DIALGUARD_CAMPAIGN_ROUTE_<route id>, VICIdial entry without a campaign):\n"
        "DIALGUARD_DEFAULT_CAMPAIGN = default\n"
    )


def with_includes(text: str) -> str:
    """extensions.conf with the two includes (each added only if missing)."""
    lines = text.splitlines(keepends=True)
    present = {line.strip() for line in lines}
    if INCLUDE_GLOBALS not in present:
        for i, line in enumerate(lines):
            if line.strip().lower() == "[globals]":
                lines.insert(i + 1, INCLUDE_GLOBALS + "\n")
                break
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines += ["\n", "[globals]\n", INCLUDE_GLOBALS + "\n"]
    if INCLUDE_DIALPLAN not in present:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", "; dialguard (dialguard install asterisk)\n", INCLUDE_DIALPLAN + "\n"]
    return "".join(lines)


def plan(conf_dir: Path, agi_url: str, apply_includes: bool = False) -> list[Change]:
    """What install would change in conf_dir (nothing when it is up to date)."""
    if not conf_dir.is_dir():
        raise InstallError(f"{conf_dir}: no such folder (the Asterisk configuration folder, e.g. /etc/asterisk)")
    changes = []
    for name in OURS:
        path, new = conf_dir / name, packaged(name)
        old = path.read_text() if path.exists() else None
        if old != new:
            changes.append(Change(path, old, new, "dialplan (replaced by each install)" if old else "dialplan"))
    g = conf_dir / GLOBALS
    new_globals = globals_text(agi_url)
    if not g.exists():
        changes.append(Change(g, None, new_globals, "globals (yours from now on: never replaced)"))
    if apply_includes:
        ext = conf_dir / "extensions.conf"
        old = ext.read_text() if ext.exists() else None
        new = with_includes(old or "")
        if new != old:
            changes.append(Change(ext, old, new, "your extensions.conf: the two includes"))
    return changes


def missing_includes(conf_dir: Path) -> list[str]:
    """Include lines extensions.conf (or FreePBX's custom files) does not have yet."""
    seen = set()
    for name in ("extensions.conf", "extensions_custom.conf", "globals_custom.conf"):
        path = conf_dir / name
        if path.exists():
            seen |= {line.strip() for line in path.read_text(errors="replace").splitlines()}
    return [line for line in (INCLUDE_GLOBALS, INCLUDE_DIALPLAN) if line not in seen]


def apply(changes: list[Change]) -> None:
    """Write every planned change atomically; extensions.conf keeps a backup."""
    for change in changes:
        if change.path.name == "extensions.conf" and change.old is not None:
            backup = change.path.with_name("extensions.conf.dialguard-backup")
            if not backup.exists():
                backup.write_text(change.old)
        tmp = change.path.with_name(f".{change.path.name}.dialguard-tmp")
        tmp.write_text(change.new)
        mode = change.path.stat().st_mode & 0o777 if change.path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, change.path)
