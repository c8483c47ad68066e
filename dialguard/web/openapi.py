"""The API's OpenAPI 3.1 description, served at /api/v1/openapi.json."""

from __future__ import annotations

from dialguard.eligibility import MAX_BATCH

_answer = {
    "type": "object",
    "required": ["decision", "reasons", "explanations", "next_eligible_at"],
    "properties": {
        "number": {"type": ["string", "null"], "description": "E.164; masked unless the token's role is "
                                                               "supervisor or above; null when invalid"},
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "reasons": {"type": "array", "items": {"type": "string"},
                    "description": "every reason code that denies now (SPEC §2), in SPEC order"},
        "explanations": {"type": "object", "additionalProperties": {"type": "string"}},
        "next_eligible_at": {"type": ["string", "null"], "format": "date-time",
                             "description": "earliest time the same question may be answered allow; null "
                                            "for allow, or when waiting cannot help (dnc, opted_out, ...)"},
        "caller_id": {"type": ["string", "null"], "description": "the caller ID the guard would present"},
    },
}
_err = {"type": "object", "properties": {"error": {"type": "string"}}}
_params = [
    {"name": "number", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 64}},
    {"name": "campaign", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 128}},
    {"name": "agent", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 128},
     "description": "the agent who would take the call (agent caps); default: none in particular"},
    {"name": "caller_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "subject", "in": "query", "required": False, "schema": {"type": "string"}},
]
_lead = {"oneOf": [{"type": "string"}, {"type": "object", "required": ["number"], "properties": {
    "number": {"type": "string"}, "campaign": {"type": "string"}, "agent": {"type": "string"},
    "caller_id": {"type": "string"}, "subject": {"type": "string"}}}]}
_errors = {"400": {"description": "bad input", "content": {"application/json": {"schema": _err}}},
           "401": {"description": "no valid token"}, "403": {"description": "the token's role may not"}}

_str = {"type": "string"}
_why = {"type": "string", "maxLength": 500, "description": "kept in the audit"}


def _action(summary: str, required: list[str], props: dict, more: dict) -> dict:
    return {"post": {"summary": summary, "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": required, "properties": props}}}},
        "responses": {"200": {"description": "done; `by` is the audited identity"}, **more, **_errors}}}


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "dialguard API", "version": "1",
             "description": "Read-only questions to the guard (eligibility: the same rules and live state as "
                            "a call attempt, nothing reserved, nothing recorded), and the admin actions of "
                            "authenticated users, each checked by role (dialguard/authz.py) and audited "
                            "with the token's user."},
    "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                                 "description": "dialguard user token NAME (dgt_...)"}},
                   "schemas": {"Answer": _answer}},
    "security": [{"token": []}],
    "paths": {
        "/api/v1/eligibility": {
            "get": {"summary": "May this number be called now, and if not, when?", "parameters": _params,
                    "responses": {"200": {"description": "the answer", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Answer"}}}}, **_errors}},
            "post": {"summary": f"The same question for up to {MAX_BATCH:,} leads",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["leads"], "properties": {
                             "campaign": {"type": "string"}, "agent": {"type": "string"},
                             "caller_id": {"type": "string"},
                             "leads": {"type": "array", "maxItems": MAX_BATCH, "items": _lead}}}}}},
                     "responses": {"200": {"description": "one answer per lead, in order", "content": {
                         "application/json": {"schema": {"type": "object", "properties": {"results": {
                             "type": "array", "items": {"$ref": "#/components/schemas/Answer"}}}}}}},
                         "413": {"description": f"more than {MAX_BATCH:,} leads"}, **_errors}},
        },
        "/api/v1/killswitch": {
            "get": {"summary": "Kill switches in effect (viewer or above)",
                    "responses": {"200": {"description": "switches: all, camp:NAME, cid:TAG, with since"},
                                  **_errors}},
            "post": {"summary": "Pause or resume all outbound, a campaign, or calls into a region for a "
                                "window (supervisor or above); audited as token:<id>:<user>",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["action"], "properties": {
                             "action": {"type": "string", "enum": ["pause", "resume"]},
                             "scope": {"type": "string", "enum": ["all", "campaign", "region"], "default": "all"},
                             "name": {"type": "string", "description": "the campaign (scope campaign) or the "
                                                                       "region, ISO 3166-2 (scope region)"},
                             "from": {"type": "string", "format": "date-time",
                                      "description": "scope region: start, with offset (default now)"},
                             "until": {"type": "string", "format": "date-time",
                                       "description": "scope region: end, with offset (default: until resumed)"},
                             "why": {"type": "string", "maxLength": 500}}}}}},
                     "responses": {"200": {"description": "done; the switches now in effect"}, **_errors}},
        },
        # four eyes (dialguard/approvals.py): a request takes effect when a different compliance user approves it
        "/api/v1/overrides": {
            "post": {"summary": "Request a one-time override for a number (supervisor or above)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["number", "why"], "properties": {
                             "number": {"type": "string"}, "why": {"type": "string", "maxLength": 1000},
                             "campaign": {"type": "string"},
                             "lifts": {"type": "array", "items": {"type": "string"},
                                       "description": "counter and hours reasons only; default: all of them"},
                             "hours": {"type": "number", "maximum": 720, "default": 24,
                                       "description": "how long the grant holds once approved"}}}}}},
                     "responses": {"201": {"description": "the request, pending"}, **_errors}},
        },
        "/api/v1/campaigns": {
            "post": {"summary": "Request approval of a campaign (supervisor or above)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["name", "purpose", "scope", "caps", "hours", "why"],
                         "properties": {**{k: {"type": "string"} for k in (
                             "name", "purpose", "scope", "caps", "hours", "why", "start", "end")},
                             "rules": {"type": "string",
                                       "description": "the campaign's own packs: shipped pack names "
                                                      "([a-z0-9-]+), comma-separated; never a file (400)"}}}}}},
                     "responses": {"201": {"description": "the request, pending"}, **_errors}},
        },
        "/api/v1/requests": {
            "get": {"summary": "Requests, newest first (viewer or above; numbers masked below supervisor)",
                    "parameters": [{"name": "kind", "in": "query", "schema": {"enum": ["override", "campaign"]}},
                                   {"name": "status", "in": "query", "schema": {"enum": ["pending"]}}],
                    "responses": {"200": {"description": "requests with both identities"}, **_errors}},
        },
        "/api/v1/requests/{id}/{decision}": {
            "post": {"summary": "Approve or reject another user's request (compliance or above; never one's own)",
                     "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                                    {"name": "decision", "in": "path", "required": True,
                                     "schema": {"enum": ["approve", "reject"]}}],
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "properties": {"note": {"type": "string"}}}}}},
                     "responses": {"200": {"description": "decided; an approval is in effect"},
                                   "404": {"description": "no such request"},
                                   "409": {"description": "already decided"}, **_errors}},
        },
        # the other admin writes (dialguard/admin_actions.py): role per docs/WEB.md, audited as the token's user
        "/api/v1/overrides/revoke": _action(
            "Revoke a number's unused override grant (supervisor or above)", ["number"],
            {"number": _str, "why": _why}, {"404": {"description": "no unused override for this number"}}),
        "/api/v1/campaigns/revoke": _action(
            "Withdraw a campaign's approval; a running dialer campaign stops (compliance or above)", ["name"],
            {"name": _str, "why": _why}, {"404": {"description": "a campaign the guard never approved"}}),
        "/api/v1/dnc": _action(
            "Add a number to the global or a campaign's DNC list (supervisor or above) or remove it "
            "(compliance or above); in Redis and at rest", ["action", "number"],
            {"action": {"enum": ["add", "remove"]}, "number": _str,
             "campaign": {"type": "string", "description": "the campaign's list; default the global list"},
             "why": _why}, {"503": {"description": "PostgreSQL down: the Redis side is done, the answer says so"}}),
        "/api/v1/events": _action(
            "Record an opt-out, a complaint or consent (or revoke consent) of a number, a party or both "
            "(supervisor or above)", ["kind"],
            {"kind": {"enum": ["opt_out", "complaint", "consent", "consent_revoke"]}, "number": _str,
             "party": {"type": "string", "maxLength": 200, "description": "the person (SPEC §2 party)"},
             "why": _why}, {}),
        "/api/v1/callerids": _action(
            "Approve a caller ID (in the global or a campaign's pool), remove it, or cool it down until a "
            "time (compliance or above)", ["action", "caller_id"],
            {"action": {"enum": ["add", "remove", "cooldown"]}, "caller_id": _str,
             "pool": {"type": "boolean", "default": False}, "campaign": {"type": "string"},
             "until": {"type": "string", "format": "date-time", "description": "cooldown: with offset"},
             "why": _why}, {"404": {"description": "remove or cool down a caller ID that is not approved"}}),
        "/api/v1/rules": {
            "post": {"summary": "Publish rules (compliance or above): apply files, activate a version, shadow off",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["action"], "properties": {
                             "action": {"enum": ["apply", "activate", "shadow_off"]},
                             "files": {"type": "array", "items": {"type": "object", "properties": {
                                 "ref": {"type": "string"}, "text": {"type": "string"}}}},
                             "version": {"type": "integer"}, "shadow": {"type": "boolean"},
                             "why": {"type": "string"}}}}}},
                     "responses": {"200": {"description": "the version in effect"}, **_errors}},
        },
        "/api/v1/calendars": {
            "post": {"summary": "Publish a calendar year or activate a stored version (compliance or above)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["action"], "properties": {
                             "action": {"enum": ["import", "activate"]}, "code": {"type": "string"},
                             "text": {"type": "string", "description": "the calendar file (SPEC §9)"},
                             "version": {"type": "integer"}, "why": {"type": "string"}}}}}},
                     "responses": {"200": {"description": "the calendar version in effect"}, **_errors}},
        },
    },
}
