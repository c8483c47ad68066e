"""The engine: every job on the live store in one object, for the adapters that
do them all (the FastAGI server, the dialer, the console, the tests).

It is made of three parts, each usable alone:
  dialguard/decision/decider.py  Decider       the hot path: decide()
  dialguard/admin.py             AdminStore    kill switches, campaigns, caller IDs, overrides
  dialguard/events.py            NumberEvents  outcomes, opt-out, complaint, consent, DNC entries
on dialguard/store.py (Store: client, keys, clock, published versions). An admin
command uses dialguard.admin.Admin, which loads nothing of the hot path.
"""

from __future__ import annotations

from dialguard.admin import AdminStore
from dialguard.decision.decider import (  # noqa: F401 - dialguard.engine.<name> for its users
    EXPLAIN, POOL_WINDOW, CONTEXT_TTL, Decider, _allowed, _Context, request_fingerprint,
)
from dialguard.events import NumberEvents
from dialguard.ids import new_id  # noqa: F401 - dialguard.engine.new_id for its users
from dialguard.store import CampaignRulesError  # noqa: F401


__all__ = ["CONTEXT_TTL", "EXPLAIN", "POOL_WINDOW", "CampaignRulesError", "Engine", "_Context", "_allowed",
           "new_id", "request_fingerprint"]


class Engine(Decider, AdminStore, NumberEvents):
    """Decide, administer and report on one client: Engine.create loads the hot path."""
