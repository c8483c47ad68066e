"""``optout``: the person asked not to be called again (agent feature code or IVR).

Dialplan: ``AGI(agi://HOST:PORT/optout,NUMBER)``; sets DIALGUARD_EVENT_RESULT.
"""

from . import register
from ._event import PARAMS, on_error, record


async def handle(ctx) -> None:
    await record(ctx, "opt_out")


register("optout", params=PARAMS, on_error=on_error)(handle)
