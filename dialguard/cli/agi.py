"""`dialguard agi check`: one `check` session against a FastAGI server, opened as
Asterisk opens it (agi/client.py): an end-to-end test of a running guard
without a PBX or a phone. It is a real decision: an allowed attempt is counted.

Exit codes (dialguard/cli/common.py): 0 allowed, 1 denied, 2 bad input, 3 the
server is unreachable or did not answer as a FastAGI server should.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import typer

from dialguard.cli.common import EXIT_DENIED, EXIT_UNAVAILABLE, fail, out

app = typer.Typer()
agi_app = typer.Typer(help="The FastAGI server, seen from Asterisk's side.", no_args_is_help=True)
app.add_typer(agi_app, name="agi")


@agi_app.command("check")
def agi_check(
    number: str = typer.Argument(..., help="Number to call, any format"),
    campaign: str = typer.Option(..., "--campaign", "-c"),
    agent: str = typer.Option(..., "--agent", "-a"),
    subject: Optional[str] = typer.Option(None, "--subject"),
    caller_id: Optional[str] = typer.Option(None, "--caller-id"),
    server: str = typer.Option("127.0.0.1:14573", "--server", help="HOST:PORT of the FastAGI server"),
    timeout: float = typer.Option(10.0, "--timeout", help="seconds for the whole session"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Ask a FastAGI server for a decision as the dialplan does; print the channel variables it sets."""
    from agi.client import agi_call

    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--server {server!r}: expected HOST:PORT")
    try:
        res = asyncio.run(asyncio.wait_for(
            agi_call(host.strip("[]"), int(port), "check", (number, campaign, agent, subject or "", caller_id or ""),
                     timeout=timeout), timeout))
    except (OSError, TimeoutError) as exc:
        fail(f"FastAGI server {server} unreachable: {exc or type(exc).__name__}", EXIT_UNAVAILABLE)
    result = res.variables.get("DIALGUARD_RESULT")
    if result not in ("ALLOW", "DENY"):
        fail(f"FastAGI server {server} set no DIALGUARD_RESULT (commands: {res.commands[:5]})", EXIT_UNAVAILABLE)
    if as_json:
        print(json.dumps(res.variables, sort_keys=True))
    else:
        for name, value in sorted(res.variables.items()):
            out.print(f"{name}={value}", highlight=False, markup=False)
    raise typer.Exit(0 if result == "ALLOW" else EXIT_DENIED)

