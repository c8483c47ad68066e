"""Decisions from the command line: `dialguard check` (one real decision on the
live store) and `dialguard simulate` (a scenario replayed in an isolated namespace)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from dialguard.cli.common import EXIT_DENIED, EXIT_UNAVAILABLE, fail, out, redis_unreachable
from dialguard.config import Settings
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, RulesError
from dialguard.timeutil import parse_time

app = typer.Typer()


@app.command()
def simulate(scenario: Path = typer.Argument(..., help="Scenario YAML (SPEC §5)")):
    """Replay a scenario against rules in an isolated namespace; one JSON line per attempt."""
    from dialguard.simulate import ScenarioError, load_scenario, run_scenario
    from redis.exceptions import RedisError

    try:
        sc, policy = load_scenario(scenario)
    except ScenarioError as exc:
        fail(str(exc))
    try:
        asyncio.run(run_scenario(sc, policy, emit=lambda line: print(line, flush=True)))
    except (RedisError, OSError) as exc:
        redis_unreachable(Settings(), exc)


@app.command()
def check(
    number: str = typer.Argument(..., help="Number to call, any format"),
    campaign: str = typer.Option(..., "--campaign", "-c"),
    agent: str = typer.Option(..., "--agent", "-a"),
    caller_id: Optional[str] = typer.Option(None, "--caller-id"),
    subject: Optional[str] = typer.Option(None, "--subject"),
    region: Optional[str] = typer.Option(None, "--region", help="Where the callee lives, ISO 3166-2 (US-FL)"),
    postal_code: Optional[str] = typer.Option(None, "--postal-code", help="The callee's postal code (US ZIP)"),
    party: Optional[str] = typer.Option(None, "--party", help="Opaque id of the person behind the number"),
    at: Optional[str] = typer.Option(None, "--at", help="ISO 8601 time with offset (default: now)"),
    rules: Optional[str] = typer.Option(None, "--rules", help="Packs or files, comma-separated"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Decide one attempt against the live store, explaining each reason.

    A check is a real decision: when allowed, the attempt is counted.
    """
    from dialguard.engine import Engine

    try:
        now = parse_time(at) if at else None
    except ValueError as exc:
        fail(f"--at: {exc}")
    settings = Settings()
    try:
        policy = Policy.load(rules or settings.rules)
    except RulesError as exc:
        fail(str(exc))

    try:
        req = DecisionRequest(number=number, campaign=campaign, agent=agent, caller_id=caller_id,
                              subject=subject, region=region, postal_code=postal_code, party=party)
    except ValidationError as exc:
        fail("; ".join(f"--{'-'.join(str(e['loc'][0]).split('_'))}: {e['msg']}" for e in exc.errors()))

    async def run():
        # --rules names the rules to decide with; otherwise the published version applies
        engine = await Engine.create(settings, policy, versioned=rules is None)
        try:
            return await engine.decide(req, now=now)
        finally:
            await engine.close()

    d = asyncio.run(run())
    if as_json:
        print(d.model_dump_json())
    else:
        color = "green" if d.allowed else "red"
        out.print(f"[bold {color}]{d.decision.upper()}[/] {d.number or number}  decision {d.decision_id}")
        if d.allowed:
            out.print(f"  caller ID: {d.caller_id or '(dialplan default)'}   max duration: "
                      f"{d.max_duration_s or 'none'}{'s' if d.max_duration_s else ''}")
        for r in d.reasons:
            out.print(f"  [bold]{r}[/]: {d.explanations.get(r, '')}", highlight=False)
        if not d.allowed:
            ne = (d.next_eligible_at.isoformat() if d.next_eligible_at else
                  f"unknown: {d.next_unknown}" if d.next_unknown else "never (a permanent block)")
            out.print(f"  next eligible: {ne}")
    if d.reasons == ["guard_unavailable"]:
        raise typer.Exit(EXIT_UNAVAILABLE)
    raise typer.Exit(0 if d.allowed else EXIT_DENIED)


@app.command()
def outcome(
    call_id: str = typer.Argument(..., help="The call id the attempt was decided under"),
    result: str = typer.Option(..., "--result", help="conversation, answered, voicemail, no_answer, busy, failed, "
                                                     "abandoned or amd"),
    talk_s: int = typer.Option(0, "--talk-s", min=0),
    subjects: list[str] = typer.Option([], "--subject", help="another subject discussed in the conversation "
                                                             "(repeatable): its quiet period starts too"),
    at: Optional[str] = typer.Option(None, "--at", help="ISO 8601 time with offset (default: now)"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Report how an allowed call ended (when no dialplan or dialer did), naming the
    other subjects discussed: the same effect as the AGI report and `simulate`."""
    import json

    from dialguard.decision.models import OUTCOME_RESULTS, Outcome
    from dialguard.engine import Engine
    from dialguard.subjects import parse_subjects, report_other_subjects

    if result not in OUTCOME_RESULTS:
        fail(f"--result {result!r}: expected one of {', '.join(OUTCOME_RESULTS)}")
    try:
        now = parse_time(at) if at else None
        o = Outcome(result=result, talk_s=talk_s)
        subs = parse_subjects(" ".join(subjects))
    except ValueError as exc:
        fail(str(exc))
    settings = Settings()

    async def run():
        engine = await Engine.create(settings, Policy.load(settings.rules))
        try:
            matched = await engine.report_outcome(call_id, o, now=now)
            others = await report_other_subjects(engine, call_id, o, subs, now=now) if matched else 0
            return matched, others
        finally:
            await engine.close()

    matched, others = asyncio.run(run())
    if as_json:
        print(json.dumps({"call_id": call_id, "matched": matched, "result": result, "other_subjects": others}))
    elif matched:
        out.print(f"reported {result} for call {call_id}" + (f"; {others} other subject(s)" if others else ""))
    else:
        out.print(f"no allowed call {call_id!r} is known (recorded in the audit all the same)")
    raise typer.Exit(0 if matched else 1)
