"""``report``: the outcome of an allowed call, from the dialplan after Dial or a
hangup handler (answered or not). Releases the engine's concurrency lease and
feeds the outcome-based rules (post-conversation quiet period, Regulation F
"never connected" calls taken back out of the count).

Dialplan: ``AGI(agi://HOST:PORT/report,${DIALSTATUS},${ANSWEREDTIME},${CDR(billsec)},${HANGUPCAUSE},${DIALGUARD_DECISION_ID}[,AMDSTATUS[,CALLID[,SIPCODE[,SUBJECTS]]]])``.
SIPCODE: the trunk's SIP response (from ``HANGUPCAUSE(<channel>,tech)``, e.g.
403), so that caller-ID health tells a carrier's rejection from a busy callee.
SUBJECTS: the other subjects discussed in the conversation (DIALGUARD_SUBJECTS,
"debt-2|debt-3"): each one's post-conversation quiet period starts too.
It writes nothing to the channel (it is usually dead by then).
"""

from __future__ import annotations

import logging
import re

from dialguard.decision.models import OUTCOME_RESULTS, Outcome, not_answered_result
from dialguard.subjects import parse_subjects

from . import BadRequest, Context, register

log = logging.getLogger("dialguard.agi")

PARAMS = ("dialstatus", "answeredtime", "billsec", "hangupcause", "decisionid", "amdstatus", "callid", "sipcode",
          "subjects")

# DIALSTATUS -> outcome result (SPEC §5 list) for calls that were not answered.
_NOT_ANSWERED = {
    "NOANSWER": "no_answer",
    "CANCEL": "no_answer",  # the agent gave up while it rang: the callee never answered
    "BUSY": "busy",
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
    "INVALIDARGS": "failed",
    "": "failed",  # Dial never ran (e.g. the agent hung up during the check)
}


def _int(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        n = int(float(value))  # ANSWEREDTIME may come as "12" or "12.345"
    except ValueError:
        return None
    return n if 0 <= n < 10_000_000 else None


def sip_code(value: str | None) -> int | None:
    """A SIP final response code (400-699: a failed call) from "403" or
    "SIP 403 Forbidden"; None for anything else (never guessed)."""
    m = re.search(r"(?<!\d)([4-6]\d\d)(?!\d)", value or "")
    return int(m.group(1)) if m else None


def classify(dialstatus: str | None, answered_s: int | None, billsec: int | None,
             hangup_cause: int | None, amdstatus: str | None = None,
             conversation_min_s: int = 1, sip: int | None = None) -> Outcome:
    """Map what Asterisk knows after a Dial to an :class:`Outcome`.

    An answered call is a ``conversation`` when it lasted at least
    ``conversation_min_s`` talk seconds (ANSWEREDTIME, else CDR billsec), else
    ``answered``. A machine detected by AMD is ``amd``.
    """
    status = (dialstatus or "").strip().upper()
    if hangup_cause is not None and not 0 <= hangup_cause <= 127:
        hangup_cause = None  # not a Q.850 cause: unknown rather than a failed report
    talk = answered_s if answered_s is not None else (billsec or 0)
    if status == "ANSWER" or (not status and talk > 0):
        if (amdstatus or "").strip().upper() == "MACHINE":
            return Outcome(result="amd", talk_s=talk, hangup_cause=hangup_cause)
        result = "conversation" if talk >= conversation_min_s else "answered"
        return Outcome(result=result, talk_s=talk, hangup_cause=hangup_cause)
    if status in ("DONTCALL", "TORTURE"):
        # The privacy manager picked up and the callee refused: answered, no talk.
        return Outcome(result="answered", talk_s=0, hangup_cause=hangup_cause)
    if not status and hangup_cause is not None:
        # no DIALSTATUS: the Q.850 cause decides (dialguard.decision.models, as the dialer)
        return Outcome(result=not_answered_result(hangup_cause), talk_s=0, hangup_cause=hangup_cause, sip_code=sip)
    return Outcome(result=_NOT_ANSWERED.get(status, "failed"), talk_s=0, hangup_cause=hangup_cause, sip_code=sip)


async def handle(ctx: Context) -> None:
    decision_id = ctx.param("decisionid")
    call_id = ctx.call_id
    if not decision_id or not call_id:
        # Nothing was allowed on this channel: there is nothing to report.
        ctx.fields.update(outcome="skipped", call_id=call_id)
        return
    override = ctx.request.query.get("result")
    if override and override not in OUTCOME_RESULTS:
        raise BadRequest(f"result={override[:20]!r} is not one of {', '.join(OUTCOME_RESULTS)}")
    try:
        subjects = parse_subjects(ctx.param("subjects"))
    except ValueError as exc:  # the outcome itself is still reported
        log.warning("report %s: DIALGUARD_SUBJECTS ignored: %s", call_id, exc)
        subjects = []
    outcome = classify(
        ctx.param("dialstatus"), _int(ctx.param("answeredtime")), _int(ctx.param("billsec")),
        _int(ctx.param("hangupcause")), ctx.param("amdstatus"), ctx.options.conversation_min_s,
        sip_code(ctx.param("sipcode")))
    if override:
        # A dialer or IVR that knows better (e.g. voicemail, abandoned) says so.
        outcome = Outcome(result=override, talk_s=outcome.talk_s, hangup_cause=outcome.hangup_cause,
                          sip_code=outcome.sip_code)
    ctx.fields.update(call_id=call_id, decision_id=decision_id, result=outcome.result,
                      talk_s=outcome.talk_s, hangup_cause=outcome.hangup_cause, sip_code=outcome.sip_code,
                      dialstatus=ctx.param("dialstatus") or "")
    matched = await ctx.engine_call("report_outcome", call_id, outcome)
    if matched and subjects and outcome.result == "conversation":
        # the other subjects discussed: each one's quiet period, as simulate does
        for subject in subjects:
            await ctx.engine_call("report_outcome", call_id, outcome, subject=subject)
        ctx.fields["subjects"] = len(subjects)
    ctx.fields["outcome"] = "reported"
    if matched is not None:
        # False: the engine knows no allowed call by this id (logged, not an error).
        ctx.fields["matched"] = bool(matched)


register("report", params=PARAMS)(handle)
