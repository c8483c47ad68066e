"""``complaint``: a complaint was made about calls to this number.

Dialplan: ``AGI(agi://HOST:PORT/complaint,NUMBER)``; sets DIALGUARD_EVENT_RESULT.
"""

from . import register
from ._event import PARAMS, on_error, record


async def handle(ctx) -> None:
    await record(ctx, "complaint")


register("complaint", params=PARAMS, on_error=on_error)(handle)
