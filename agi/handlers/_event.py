"""Shared body of the number events (opt-out, complaint) sent from a feature
code or an IVR. Sets DIALGUARD_EVENT_RESULT to OK or ERROR so an IVR can
confirm to the person (or apologise and log)."""

from __future__ import annotations

import logging

from . import Context, mask_number

log = logging.getLogger("dialguard.agi")

PARAMS = ("number",)


async def record(ctx: Context, engine_fn: str) -> None:
    number = ctx.param("number")
    ctx.fields["number"] = mask_number(number)
    if not number:
        ctx.fields.update(outcome="error", error="no number")
        await ctx.session.set_variable("DIALGUARD_EVENT_RESULT", "ERROR")
        return
    await ctx.engine_call(engine_fn, number)
    ctx.fields["outcome"] = "recorded"
    await ctx.session.set_variable("DIALGUARD_EVENT_RESULT", "OK")


async def on_error(ctx: Context, exc: BaseException) -> None:
    ctx.fields["outcome"] = "error"
    await ctx.session.set_variable("DIALGUARD_EVENT_RESULT", "ERROR")
