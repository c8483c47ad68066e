"""`dialguard loadtest`: SIPp through the guard against your PBX
(dialguard/loadtest). Exit codes: 0 the run completed (whatever the guard
decided), 2 bad input or SIPp could not run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dialguard.cli.common import fail

out = Console(soft_wrap=True)  # paths and diffs stay on one line

app = typer.Typer()


@app.command("loadtest")
def loadtest(
    pbx: str = typer.Option(..., "--pbx", help="HOST:PORT of the PBX's SIP listener."),
    caller: str = typer.Option(..., "--caller", help="From user your PBX routes through the guard."),
    numbers: Path = typer.Option(..., "--numbers", help="File of numbers to call, one a line (test numbers!)."),
    rate: float = typer.Option(10.0, "--rate", help="Calls per second."),
    duration: float = typer.Option(3.0, "--duration", help="Seconds of sending (rate x duration calls)."),
    campaign: str = typer.Option("loadtest", "--campaign", help="Sent as the X-Campaign header."),
    agent: str = typer.Option("loadtest", "--agent", help="Sent as the X-Agent header."),
    plain: Optional[str] = typer.Option(None, "--plain", help="From user of an unguarded route: PDD baseline."),
    carrier_port: Optional[int] = typer.Option(None, "--carrier-port",
                                               help="Run the SIPp carrier on this port (your test trunk)."),
    hold_ms: int = typer.Option(100, "--hold-ms", help="Talk time of answered calls."),
    local_ip: str = typer.Option("127.0.0.1", "--local-ip", help="Address SIPp binds to."),
    workdir: Path = typer.Option(Path("loadtest-run"), "--workdir", help="Where SIPp's logs go."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Place rate x duration calls through your PBX with SIPp; print calls/s,
    post-dial delay (and what the guard adds, with --plain) and denials."""
    from dialguard.loadtest import LoadtestError, Options, render, run

    try:
        nums = [line.strip() for line in numbers.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        fail(f"--numbers: {exc}")
    for n in nums:
        if not n.lstrip("+").isdigit():
            fail(f"--numbers: {n!r} is not a number (digits, optional leading +)")
    try:
        report = run(Options(pbx=pbx, caller=caller, numbers=nums, campaign=campaign, agent=agent, rate=rate,
                             duration=duration, hold_ms=hold_ms, plain=plain, carrier_port=carrier_port,
                             local_ip=local_ip, workdir=workdir))
    except LoadtestError as exc:
        fail(str(exc))
    if as_json:
        out.out(json.dumps(report), highlight=False)
    else:
        out.print(render(report), highlight=False, markup=False)

