"""`dialguard install asterisk`: the guard's dialplan into an existing Asterisk
(dialguard/install.py). Shows a diff of every change first; --dry-run stops
there. Exit codes: 0 done (or nothing to do), 2 bad input."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dialguard.cli.common import fail

out = Console(soft_wrap=True)  # paths and diffs stay on one line

app = typer.Typer()
install_app = typer.Typer(help="Install the guard's pieces into an existing PBX.", no_args_is_help=True)
app.add_typer(install_app, name="install")


@install_app.command("asterisk")
def install_asterisk(
    conf_dir: Path = typer.Option(Path("/etc/asterisk"), "--conf-dir", help="Asterisk configuration folder."),
    agi_url: str = typer.Option("agi://127.0.0.1:14573", "--agi-url",
                                help="FastAGI server the dialplan asks (written into the globals file once)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    yes: bool = typer.Option(False, "--yes", help="Also add the two #include lines to your extensions.conf."),
) -> None:
    """Write extensions_dialguard*.conf and the example globals into CONF_DIR.

    Your own files are left alone unless --yes (then only the two #include
    lines are added to extensions.conf, with a backup). Running it again
    changes nothing unless the package's dialplan changed."""
    from dialguard.install import InstallError, apply, missing_includes, plan

    try:
        changes = plan(conf_dir, agi_url, apply_includes=yes)
    except (InstallError, OSError) as exc:
        fail(str(exc))
    for change in changes:
        out.print(f"{change.path}: {change.note}", highlight=False, markup=False)
        out.out(change.diff(), highlight=False)
    if not changes:
        out.print(f"{conf_dir}: up to date, nothing to change", highlight=False, markup=False)
    elif dry_run:
        out.print(f"--dry-run: {len(changes)} file(s) would change, nothing written", highlight=False, markup=False)
        return
    else:
        try:
            apply(changes)
        except OSError as exc:
            fail(f"could not write {conf_dir}: {exc}")
        out.print(f"{len(changes)} file(s) written", highlight=False, markup=False)
    todo = missing_includes(conf_dir)
    if todo and not dry_run:
        out.print("Still to do (or run again with --yes), then `dialplan reload`:", highlight=False, markup=False)
        if "#include extensions_dialguard_globals.conf" in todo:
            out.print("  in extensions.conf, right under [globals] (FreePBX: in globals_custom.conf):\n"
                      "    #include extensions_dialguard_globals.conf", highlight=False, markup=False)
        if "#include extensions_dialguard.conf" in todo:
            out.print("  at the end of extensions.conf (FreePBX: in extensions_custom.conf):\n"
                      "    #include extensions_dialguard.conf\n"
                      "  and the recipe of your PBX, if any: #include extensions_dialguard_freepbx.conf\n"
                      "  (docs/FREEPBX.md) or extensions_dialguard_vicidial.conf (docs/VICIDIAL.md)",
                      highlight=False, markup=False)

