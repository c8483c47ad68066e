"""``check``: one decision via the engine, result in channel variables (SPEC §4).

Dialplan: ``AGI(agi://HOST:PORT/check,NUMBER,CAMPAIGN,AGENT[,SUBJECT[,CALLERID[,CALLID[,REGION[,POSTAL_CODE[,PARTY]]]]]])``
(the same names also work as query arguments: region, postal_code, party). Fail-closed: the first command
sets DIALGUARD_RESULT=DENY (unless the request says ``?preset=deny``: the
dialplan set DENY and guard_unavailable before the AGI, as dialguard-dial and
dialguard-check do, so one command a check) and ALLOW is set last, only after a real allow and
only when every other variable was set; any error leaves DENY with
DIALGUARD_REASONS=guard_unavailable.

Two commands a check (``--set-mode mset``, the default): the DENY, written
before the decision and answered while it runs, then one ``EXEC MSet`` with
the other variables and the result last (MSet sets them in order, in one
application call). ``--set-mode set``: one SET VARIABLE per variable (8).

An allow also sets DIALGUARD_CALLID (not in SPEC §4): the call id the decision
was recorded under (the CALLID argument, else the channel's uniqueid), which
the dialplan's outcome report ([dialguard-report]) sends back.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from dialguard.decision.models import DecisionRequest, sort_reasons
from dialguard.masking import mask_digits

from .. import protocol as p
from ..protocol import format_utc
from . import BadRequest, Context, mask_number, register

log = logging.getLogger("dialguard.agi")

PARAMS = ("number", "campaign", "agent", "subject", "callerid", "callid", "region", "postal_code", "party")

# Request fields that a stable reason code describes when they are unusable;
# anything else wrong with the request is "the guard could not decide".
_FIELD_REASON = {"number": "invalid_number", "campaign": "campaign_not_approved",
                 "caller_id": "caller_id_not_approved",
                 # a stated location not written as one: the callee's local time is unknown
                 "region": "unknown_timezone", "postal_code": "unknown_timezone"}


_DENY_CMD = p.set_variable_command("DIALGUARD_RESULT", "DENY")


class ChannelRefused(RuntimeError):
    """Asterisk did not accept a SET VARIABLE (not a 200 reply)."""


async def _set(ctx: Context, name: str, value) -> None:
    reply = await ctx.session.set_variable(name, value)
    if not reply.ok:
        raise ChannelRefused(f"SET VARIABLE {name}: {reply.text}")


async def _set_all(ctx: Context, pairs: list[tuple[str, object]]) -> None:
    """Set the variables in this order, the last one last: one EXEC MSet
    (``200 result=0`` required) or, in "set" mode, for a value MSet cannot
    carry, or where MSet does not exist (result=-2: nothing was set), one SET
    VARIABLE each, every reply checked."""
    if ctx.options.set_mode == "mset":
        try:
            cmd = p.mset_command(pairs)
        except ValueError:
            cmd = None
        if cmd is not None:
            reply = await ctx.session.command(cmd)
            if p.mset_ok(reply):
                return
            if not (reply.ok and reply.result == "-2"):
                raise ChannelRefused(f"EXEC MSet: {reply.text}")
            ctx.fields["mset_missing"] = True
    for name, value in pairs:
        await _set(ctx, name, value)


async def _deny_first(ctx: Context) -> None:
    """The fail-closed DENY written at the start was set (its reply read now)."""
    reply = await ctx.session.collect()
    if reply is not None and not reply.ok:
        raise ChannelRefused(f"SET VARIABLE DIALGUARD_RESULT: {reply.text}")


def build_request(ctx: Context) -> DecisionRequest:
    a = ctx.params()
    kw = {"number": a["number"] or "", "campaign": a["campaign"] or "", "agent": a["agent"] or "",
          "subject": a["subject"], "caller_id": a["callerid"],
          "call_id": a["callid"] or ctx.env.get("agi_uniqueid") or None}
    # the location and party only when given: their validators (Python) map None to None anyway
    for name in ("region", "postal_code", "party"):
        if a[name] is not None:
            kw[name] = a[name]
    try:
        return DecisionRequest(**kw)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        raise BadRequest(",".join(fields) or "request") from None


async def _deny(ctx: Context, reasons: list[str], decision_id: str = "", next_eligible: str = "") -> None:
    # DIALGUARD_RESULT is already DENY (first command of the session).
    await _deny_first(ctx)
    await _set_all(ctx, [("DIALGUARD_REASONS", ",".join(reasons)), ("DIALGUARD_CALLERID", ""),
                         ("DIALGUARD_MAXDURATION", 0), ("DIALGUARD_NEXT_ELIGIBLE", next_eligible),
                         ("DIALGUARD_DECISION_ID", decision_id)])


async def _release(ctx: Context, decision) -> None:
    """An allow the channel never learnt of: give the reservation back."""
    from dialguard.decision.models import Outcome

    try:
        await asyncio.shield(ctx.engine_call(
            "report_outcome", ctx.call_id or decision.decision_id, Outcome(result="failed", talk_s=0)))
        ctx.fields["released"] = True
    except Exception as exc:  # the engine's lease expiry is the last resort
        log.warning("could not release undelivered allow %s: %r", decision.decision_id, exc)


async def handle(ctx: Context) -> None:
    ctx.fields["outcome"] = "deny"
    # Fail closed before anything else; Asterisk answers it while the engine
    # decides (reply read after). Skipped when the dialplan says it preset
    # DENY and guard_unavailable itself (``check?preset=deny``, as
    # dialguard-dial and dialguard-check do): one command a check.
    if ctx.request.query.get("preset") != "deny":
        ctx.session.send(_DENY_CMD)
    try:
        req = build_request(ctx)
    except BadRequest as exc:
        bad = str(exc).split(",")
        reasons = sort_reasons(_FIELD_REASON.get(f, "guard_unavailable") for f in bad)
        ctx.fields.update(reasons=reasons, error=f"bad request: {exc}")
        log.warning("check: unusable arguments (%s) from %s", exc, mask_digits(ctx.env.get("agi_channel")))
        await _deny(ctx, reasons)
        return
    ctx.fields.update(number=mask_number(req.number), campaign=req.campaign, agent=req.agent,
                      call_id=req.call_id)
    decision = await ctx.engine_call("decide", req)
    ctx.fields.update(decision_id=decision.decision_id, reasons=list(decision.reasons))
    # An allow (an override's included) reports no reasons to the channel.
    if decision.decision != "allow":
        reasons = list(decision.reasons) or ["guard_unavailable"]
        ctx.fields["reasons"] = reasons
        await _deny(ctx, reasons, decision.decision_id, format_utc(decision.next_eligible_at))
        return
    delivered = False
    try:
        await _deny_first(ctx)
        # ALLOW last, and only now: the one value that lets the dialplan dial.
        await _set_all(ctx, [("DIALGUARD_REASONS", ""), ("DIALGUARD_CALLERID", decision.caller_id or ""),
                             ("DIALGUARD_MAXDURATION", max(0, int(decision.max_duration_s or 0))),
                             ("DIALGUARD_NEXT_ELIGIBLE", format_utc(decision.next_eligible_at)),
                             ("DIALGUARD_DECISION_ID", decision.decision_id),
                             # the call id the engine stored the call under: the outcome
                             # report must name it (VICIdial's caller code, not the uniqueid)
                             ("DIALGUARD_CALLID", req.call_id or ""),
                             ("DIALGUARD_RESULT", "ALLOW")])
        delivered = True
    finally:
        if not delivered:
            await _release(ctx, decision)
    ctx.fields["outcome"] = "allow"
    if decision.override:
        ctx.fields["override"] = True


async def on_error(ctx: Context, exc: BaseException) -> None:
    ctx.fields.update(outcome="deny", reasons=["guard_unavailable"])
    await _set(ctx, "DIALGUARD_RESULT", "DENY")
    await _set(ctx, "DIALGUARD_REASONS", "guard_unavailable")


register("check", params=PARAMS, on_error=on_error)(handle)
