"""Rules versions and overrides: `dialguard rules apply|activate|shadow-off|diff|history|status`
and `dialguard override grant|show|revoke`.

Exit codes as dialguard/cli.py: 0 ok; 1 the answer is "no" (`rules diff`: the
rules differ, as diff(1)); 2 bad input; 3 Redis unreachable.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Optional

import typer

from dialguard.cli.admin import _fail, _run, _time, calendar_json, calendar_report, print_calendars

override_app = typer.Typer(help="One-time, audited exceptions for a number (SPEC §2).", no_args_is_help=True)
MAX_OVERRIDE = timedelta(days=30)  # a forgotten grant must not live for ever


def _consoles():
    from dialguard.cli.main import err, out
    return out, err


def _store(engine):
    from dialguard.rules_store import RulesStore
    return RulesStore(engine.redis, engine.keys, engine.settings.node)


def _bundle(spec: str):
    """(policy, bundle) of packs or files, or a clear error (exit 2)."""
    from dialguard.rules import RulesError
    from dialguard.rules_store import bundle

    try:
        return bundle(spec)
    except RulesError as exc:
        _fail(str(exc))


def _version_dict(v, role: str | None = None) -> dict:
    return {"version": v.version, "role": role, "name": v.name, "hash": v.hash, "spec": v.spec,
            "actor": v.actor, "why": v.why,
            "at": datetime.fromtimestamp(v.at / 1000).astimezone().isoformat() if v.at else None}


def register(app: typer.Typer, rules_app: typer.Typer) -> None:
    app.add_typer(override_app, name="override")

    @rules_app.command("apply")
    def rules_apply(spec: str = typer.Argument(..., help="Packs or rules files, comma-separated"),
                    shadow: bool = typer.Option(False, "--shadow",
                                                help="Evaluate beside the active rules, never enforce"),
                    why: str = typer.Option("", "--why", help="Reason, kept in the audit"),
                    as_json: bool = typer.Option(False, "--json")):
        """Publish rules as a new version, in effect on the next decision of every node."""
        from dialguard.rules_store import diff

        new_policy, b = _bundle(spec)  # the files read and checked once

        async def go(engine):
            store = _store(engine)
            cur = await store.current("shadow" if shadow else "active")
            n, changed = await store.apply_bundle(b, shadow=shadow, why=why)
            return n, changed, cur

        n, changed, cur = _run(go)
        role = "shadow" if shadow else "active"
        if as_json:
            print(json.dumps({"version": n, "role": role, "changed": changed, "previous": cur.version if cur else None}))
            return
        out, _ = _consoles()
        if not changed:
            out.print(f"unchanged: these rules are already the {role} version {n}", highlight=False)
            return
        if cur:
            out.print(diff(cur.policy(), new_policy, f"version {cur.version}", f"version {n}") or "(same content)",
                      highlight=False, markup=False)
        out.print(f"[bold green]version {n}[/] is now the {role} rules ({new_policy.name}, {new_policy.version_hash})",
                  highlight=False)

    @rules_app.command("activate")
    def rules_activate(version: int = typer.Argument(..., help="A stored version (see `rules history`)"),
                       shadow: bool = typer.Option(False, "--shadow"),
                       why: str = typer.Option("", "--why")):
        """Put a stored version back in effect (roll back or forward)."""
        async def go(engine):
            from redis.exceptions import ResponseError

            try:
                return await _store(engine).activate(version, shadow=shadow, why=why)
            except ResponseError as exc:
                raise ValueError(f"{exc}; see `dialguard rules history`") from None

        n = _run(go)
        _consoles()[0].print(f"version {n} is now the {'shadow' if shadow else 'active'} rules", highlight=False)

    @rules_app.command("shadow-off")
    def rules_shadow_off(why: str = typer.Option("", "--why")):
        """Stop evaluating the shadow rules."""
        had = _run(lambda engine: _store(engine).shadow_off(why=why))
        _consoles()[0].print("shadow rules off" if had else "no shadow rules were set")

    @rules_app.command("status")
    def rules_status(as_json: bool = typer.Option(False, "--json")):
        """The rules versions in effect (active and shadow), and until when their
        calendars are known (a warning within 45 days of the end)."""
        async def go(engine):
            store = _store(engine)
            return (await store.current("active"), await store.current("shadow"), engine.settings.rules,
                    await calendar_report(engine))

        active, shadow, configured, known = _run(go)
        if as_json:
            print(json.dumps({"active": _version_dict(active, "active") if active else None,
                              "shadow": _version_dict(shadow, "shadow") if shadow else None,
                              "configured": configured, "calendars": calendar_json(known)}))
            return
        out, _ = _consoles()
        if active:
            out.print(f"active: version {active.version} {active.name} ({active.hash}) by {active.actor or '?'}"
                      f"{': ' + active.why if active.why else ''}", highlight=False)
        else:
            out.print(f"active: none published; each node enforces its configured rules ({configured})",
                      highlight=False)
        out.print(f"shadow: version {shadow.version} {shadow.name} ({shadow.hash})" if shadow else "shadow: none",
                  highlight=False)
        print_calendars(known)

    @rules_app.command("history")
    def rules_history(as_json: bool = typer.Option(False, "--json")):
        """Every published version, oldest first."""
        from rich.table import Table

        async def go(engine):
            store = _store(engine)
            return await store.history(), await store.in_effect()

        versions, (active, shadow) = _run(go)
        role = {active: "active", shadow: "shadow"}
        if as_json:
            print(json.dumps([_version_dict(v, role.get(v.version)) for v in versions]))
            return
        t = Table("version", "in effect", "packs", "hash", "by", "at", "why")
        for v in versions:
            d = _version_dict(v, role.get(v.version))
            t.add_row(str(v.version), d["role"] or "", v.name, v.hash, v.actor, d["at"] or "", v.why)
        _consoles()[0].print(t)

    @rules_app.command("diff")
    def rules_diff(spec: Optional[str] = typer.Argument(None, help="Packs or files to compare with"),
                   from_version: Optional[int] = typer.Option(None, "--from", help="Version (default: active)"),
                   to_version: Optional[int] = typer.Option(None, "--to", help="Version instead of SPEC")):
        """What would change: the active version (or --from) against files (or --to).
        Exit 0 when identical, 1 when they differ."""
        from dialguard.rules_store import diff

        if (spec is None) == (to_version is None):
            _fail("give either packs/files to compare with, or --to VERSION")
        new = _bundle(spec)[0] if spec is not None else None

        async def go(engine):
            store = _store(engine)
            old = await (store.get(from_version) if from_version else store.current("active"))
            to = await store.get(to_version) if to_version else None
            return old, to

        old, to = _run(go)
        if from_version and old is None:
            _fail(f"no rules version {from_version}; see `dialguard rules history`")
        if to_version and to is None:
            _fail(f"no rules version {to_version}; see `dialguard rules history`")
        old_name = f"version {old.version}" if old else "(no version published)"
        text = diff(old.policy() if old else None, to.policy() if to else new, old_name,
                    f"version {to.version}" if to else spec)
        if text:
            print(text, end="")
        raise typer.Exit(1 if text else 0)

    @override_app.command("grant")
    def override_grant(number: str = typer.Argument(...),
                       reason: str = typer.Option(..., "--reason", help="Why (kept in the audit)"),
                       approver: str = typer.Option(..., "--approver", help="Who approved it"),
                       expires: str = typer.Option("24h", "--expires", help="Duration (24h, 2d) or ISO time"),
                       campaign: Optional[str] = typer.Option(None, "--campaign", help="Only for this campaign"),
                       lift: Optional[list[str]] = typer.Option(None, "--lift",
                                                               help="Only these reasons (repeat); default: every "
                                                                    "counter and hours reason"),
                       as_json: bool = typer.Option(False, "--json")):
        """Allow the number's next call once despite counter or hours reasons.
        Never lifts dnc, opted_out, complained or invalid_number."""
        from dialguard.rules import RulesError, parse_duration

        async def go(engine):
            now = await engine.now()
            try:
                until = now + parse_duration(expires)
            except (RulesError, ValueError):
                until = _time(expires, "--expires")
            if until - now > MAX_OVERRIDE:
                raise ValueError(f"--expires: at most {MAX_OVERRIDE.days} days ahead")
            gid = await engine.override_grant(number, why=reason, approver=approver, expires=until,
                                              campaign=campaign, lifts=lift or None, now=now)
            return gid, until

        gid, until = _run(go)
        if as_json:
            print(json.dumps({"id": gid, "expires_at": until.isoformat()}))
        else:
            _consoles()[0].print(f"override {gid} granted until {until.isoformat()} (used by the next eligible call)",
                                 highlight=False)

    @override_app.command("show")
    def override_show(number: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
        """The unused grant for a number, if any (exit 1 when there is none)."""
        g = _run(lambda engine: engine.override_get(number))
        if as_json:
            print(json.dumps(g))
        elif g:
            lifts = ", ".join(g["lifts"]) if g["lifts"] else "every counter and hours reason"
            _consoles()[0].print(f"override {g['id']} until {g['expires_at']}, lifts {lifts}"
                                 f"{', campaign-scoped' if g['campaign_tag'] else ''}", highlight=False)
        else:
            _consoles()[0].print("no unused override for this number")
        raise typer.Exit(0 if g else 1)

    @override_app.command("revoke")
    def override_revoke(number: str = typer.Argument(...), reason: str = typer.Option("", "--reason")):
        """Withdraw an unused grant (exit 1 when there was none)."""
        had = _run(lambda engine: engine.override_revoke(number, why=reason))
        _consoles()[0].print("override revoked" if had else "no unused override for this number")
        raise typer.Exit(0 if had else 1)
