"""`dialguard request ...`: four eyes from the command line (issue 15, point 4).

Through the console's API with DIALGUARD_TOKEN (dialguard/remote.py): the
server checks the token's role and that the approver is not the requester
(dialguard/approvals.py), and the audit names both users. There is no local
mode: four eyes need two authenticated identities.

Exit codes: 0 done; 1 refused (role, four eyes, already decided); 2 bad
input or no token; 3 the console unreachable.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 2, 3


def _fail(msg: str, code: int = EXIT_BAD_INPUT):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


app = typer.Typer()
request_app = typer.Typer(help="Four eyes: request an override or a campaign, approve or reject another "
                               "user's request (with DIALGUARD_TOKEN).", no_args_is_help=True)


def _call(method: str, path: str, body: dict | None = None) -> dict:
    from dialguard import remote

    if not remote.token():
        _fail("four eyes need an authenticated user: set DIALGUARD_TOKEN to a token of `dialguard user token` "
              "(docs/WEB.md)", EXIT_BAD_INPUT)
    try:
        return remote.call(method, path, body)
    except remote.RemoteError as exc:
        _fail(str(exc), 1 if exc.status in (403, 404, 409) else EXIT_UNAVAILABLE if exc.status in (0, 503)
              else EXIT_BAD_INPUT)


def _hours(text: str) -> float:
    from dialguard.rules import RulesError, parse_duration

    try:
        return parse_duration(text).total_seconds() / 3600
    except (RulesError, ValueError) as exc:
        _fail(f"--expires: {exc}")


app.add_typer(request_app, name="request")


def register(app: typer.Typer) -> None:
    """The `request` commands on request_app (added to this module's app above)."""

    @request_app.command("override")
    def req_override(number: str,
                     reason: str = typer.Option(..., "--reason", help="Why (kept in the audit)"),
                     expires: str = typer.Option("24h", "--expires", help="How long the grant holds once approved"),
                     campaign: Optional[str] = typer.Option(None, "--campaign"),
                     lift: Optional[list[str]] = typer.Option(None, "--lift", help="Only these reasons (repeat)"),
                     as_json: bool = typer.Option(False, "--json")):
        """Request a one-time override for a number (supervisor or above); it takes
        effect when a different compliance user approves it."""
        r = _call("POST", "/api/v1/overrides", {"number": number, "why": reason, "campaign": campaign,
                                                "lifts": lift or [], "hours": _hours(expires)})
        print(json.dumps(r)) if as_json else typer.echo(
            f"override request {r['id']} sent by {r['requested_by']}: waiting for another compliance user")

    @request_app.command("campaign")
    def req_campaign(name: str,
                     purpose: str = typer.Option(..., "--purpose"),
                     scope: str = typer.Option(..., "--scope", help="lead lists, regions"),
                     caps: str = typer.Option(..., "--caps", help="in words, for the approver"),
                     hours: str = typer.Option(..., "--hours", help="calling hours, in words"),
                     why: str = typer.Option(..., "--why"),
                     start: Optional[str] = typer.Option(None, "--start", help="ISO 8601 time with offset"),
                     end: Optional[str] = typer.Option(None, "--end"),
                     rules: Optional[str] = typer.Option(None, "--rules", help="the campaign's own packs: shipped pack "
                                                          "names, comma-separated (never a file)"),
                     as_json: bool = typer.Option(False, "--json")):
        """Request approval of a campaign (supervisor or above): it places no call
        until a different compliance user approves it."""
        r = _call("POST", "/api/v1/campaigns", {"name": name, "purpose": purpose, "scope": scope, "caps": caps,
                                                "hours": hours, "why": why, "start": start, "end": end,
                                                "rules": rules})
        print(json.dumps(r)) if as_json else typer.echo(
            f"campaign request {r['id']} sent by {r['requested_by']}: waiting for another compliance user")

    @request_app.command("list")
    def req_list(kind: Optional[str] = typer.Option(None, "--kind", help="override or campaign"),
                 pending: bool = typer.Option(False, "--pending"),
                 as_json: bool = typer.Option(False, "--json")):
        """Requests, newest first."""
        q = "&".join(p for p in (f"kind={kind}" if kind else "", "status=pending" if pending else "") if p)
        r = _call("GET", "/api/v1/requests" + (f"?{q}" if q else ""))
        if as_json:
            print(json.dumps(r))
            return
        if not r["requests"]:
            typer.echo("no request")
        for x in r["requests"]:
            what = x["number"] if x["kind"] == "override" else x["subject"]["name"]
            typer.echo(f"#{x['id']} {x['kind']} {what}: {x['status']}, requested by {x['requested_by']}"
                       + (f", decided by {x['decided_by']}" if x["decided_by"] else "") + f": {x['why']}")

    def _decide(rid: int, decision: str, note: str, as_json: bool):
        r = _call("POST", f"/api/v1/requests/{rid}/{decision}", {"note": note})
        if as_json:
            print(json.dumps(r))
        elif decision == "approve":
            typer.echo(f"request {r['id']} approved by {r['approved_by']} (requested by {r['requested_by']})"
                       + (f": grant {r['grant']} until {r['expires_at']}" if r.get("grant") else ""))
        else:
            typer.echo(f"request {r['id']} rejected by {r['rejected_by']}")

    @request_app.command("approve")
    def req_approve(rid: int, note: str = typer.Option("", "--note"), as_json: bool = typer.Option(False, "--json")):
        """Approve another user's request (compliance or above; never your own)."""
        _decide(rid, "approve", note, as_json)

    @request_app.command("reject")
    def req_reject(rid: int, note: str = typer.Option("", "--note"), as_json: bool = typer.Option(False, "--json")):
        """Reject another user's request (compliance or above; never your own)."""
        _decide(rid, "reject", note, as_json)


register(app)
