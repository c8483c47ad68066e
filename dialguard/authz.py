"""One authorization layer for admin writes (issue 15): each action and the least role it needs.

Every adapter that changes the guard's state on behalf of a person or a
machine (the web console, the API; the CLI once it acts through a token)
asks `require(identity, action)` before calling the engine, and writes
`actor_of(identity)` to the audit: the authenticated identity, never a name
the caller typed. An action not in ACTIONS is refused (fail closed).

"Implemented" marks the actions the console and the API perform through this
layer (the CLI with a token sends them there); users_manage is the one left to
`dialguard user`, which works with the admin database login.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialguard.users import Identity, rank


@dataclass(frozen=True)
class Action:
    role: str          # the least role allowed
    what: str          # one line for the docs and the refusal page
    implemented: bool  # performed by the console/API today


ACTIONS: dict[str, Action] = {
    # read
    "view": Action("viewer", "see the console: kill switches, number status (numbers masked)", True),
    "eligibility": Action("viewer", "ask whether a number may be called (API, read-only)", True),
    "view_callerids": Action("viewer", "see caller-ID health and cool-downs (numbers masked)", True),
    "view_numbers": Action("supervisor", "see numbers unmasked", True),
    # kill switch: supervisor or above, instantly (issue 15, point 4)
    "pause": Action("supervisor", "kill switch: pause all outbound, a campaign, a caller ID or a region", True),
    "resume": Action("supervisor", "lift a kill switch", True),
    # four eyes (dialguard/approvals.py): the approver is never the requester; the other admin
    # writes: dialguard/admin_actions.py (console /actions, API, CLI with a token)
    "override_request": Action("supervisor", "request a one-time override for a number", True),
    "override_approve": Action("compliance", "approve another user's override request (four eyes)", True),
    "override_revoke": Action("supervisor", "revoke an override grant", True),
    "campaign_request": Action("supervisor", "request approval of a campaign (purpose, scope, caps, hours)", True),
    "campaign_approve": Action("compliance", "approve or reject another user's campaign request (four eyes)", True),
    "campaign_revoke": Action("compliance", "withdraw a campaign's approval", True),
    "rules_apply": Action("compliance", "apply rules (active or shadow)", True),
    "calendar_publish": Action("compliance", "import or activate a calendar version", True),
    "dnc_edit": Action("supervisor", "add to a DNC list, import a DNC CSV", True),
    "dnc_remove": Action("compliance", "remove a number from a DNC list", True),
    "optout_record": Action("supervisor", "record an opt-out, a complaint or consent (of a number or a party)", True),
    "callerid_edit": Action("compliance", "approve, remove or cool down a caller ID, put it in a pool", True),
    "report_export": Action("viewer", "export reports (CSV, XLSX, PDF), numbers masked below supervisor", True),
    "users_manage": Action("admin", "add users, change roles, mint tokens", False),
}


class Forbidden(Exception):
    def __init__(self, identity: Identity | None, action: str, needed: str | None):
        self.identity, self.action, self.needed = identity, action, needed
        who = f"{identity.user} ({identity.role})" if identity else "nobody signed in"
        if needed is None:
            msg = f"{action!r} is not an action this layer knows: refused"
        else:
            msg = f"{action} needs the role {needed} or above; {who} may not"
        super().__init__(msg)


def allowed(identity: Identity | None, action: str) -> bool:
    a = ACTIONS.get(action)
    return identity is not None and a is not None and rank(identity.role) >= rank(a.role)


def require(identity: Identity | None, action: str) -> None:
    if not allowed(identity, action):
        a = ACTIONS.get(action)
        raise Forbidden(identity, action, a.role if a else None)


def actor_of(identity: Identity) -> str:
    """What the audit records as the actor: web:<user>, or token:<id>:<user> for a machine."""
    if identity.via == "web":
        return f"web:{identity.user}"
    return f"{identity.via}:{identity.user}"
