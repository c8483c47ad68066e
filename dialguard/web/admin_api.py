"""The admin writes that are not four eyes nor publication, for machines, the CLI
with a token and the console (issue 15, point 3); the rules are in
dialguard/admin_actions.py (authz, input, the store, the authenticated actor).

API (Bearer token, JSON):
  POST /api/v1/overrides/revoke   {"number", "why"}                              override_revoke, supervisor
  POST /api/v1/campaigns/revoke   {"name", "why"}                                campaign_revoke, compliance
  POST /api/v1/dnc                {"action": "add"|"remove", "number", "campaign", "why"}
                                                                  add: dnc_edit, supervisor; remove: compliance
  POST /api/v1/events             {"kind": "opt_out"|"complaint"|"consent"|"consent_revoke",
                                   "number", "party", "why"}                    optout_record, supervisor
  POST /api/v1/callerids          {"action": "add"|"remove"|"cooldown", "caller_id", "pool", "campaign",
                                   "until", "why"}                              callerid_edit, compliance
(the region kill switch: POST /api/v1/killswitch with "scope": "region", in app.py)

Console: /actions, one form per action (CSRF checked by the session middleware
as on every POST), the same functions, audited as web:<user>.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from dialguard import admin_actions as aa, authz
from dialguard.web.foureyes import UI
from dialguard.web.i18n import t
from dialguard.web.ui import ENGINE, IDENT, LANGK, POOL, csrf_field, page

log = logging.getLogger("dialguard.web")


def _e(s) -> str:
    return html.escape(str(s), quote=True)


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise aa.ActionError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise aa.ActionError("the body is a JSON object")
    return body


async def perform(request: web.Request, ident, what: str, b: dict) -> dict:
    """One admin action by name with its fields (from JSON or a form); ActionError when refused."""
    e = request.app[ENGINE]
    why = b.get("why", "")
    if what == "override_revoke":
        return await aa.override_revoke(e, ident, b.get("number"), why)
    if what == "campaign_revoke":
        async with request.app[POOL].connection() as conn:
            return await aa.campaign_revoke(e, ident, b.get("name"), why, conn=conn)
    if what == "dnc":
        action = b.get("action")
        if action == "add":
            return await aa.dnc_add(e, ident, b.get("number"), b.get("campaign"), why)
        if action == "remove":
            return await aa.dnc_remove(e, ident, b.get("number"), b.get("campaign"), why)
        raise aa.ActionError('action: "add" or "remove"')
    if what == "events":
        return await aa.number_event(e, ident, b.get("kind"), b.get("number"), b.get("party"), why)
    if what == "callerids":
        action = b.get("action")
        if action == "add":
            return await aa.callerid_add(e, ident, b.get("caller_id"), b.get("pool", False), b.get("campaign"), why)
        if action == "remove":
            return await aa.callerid_remove(e, ident, b.get("caller_id"), b.get("campaign"), why)
        if action == "cooldown":
            return await aa.callerid_cooldown(e, ident, b.get("caller_id"), b.get("until"), why)
        raise aa.ActionError('action: "add", "remove" or "cooldown"')
    if what == "killswitch_region":
        action = b.get("action")
        if action == "pause":
            return await aa.pause_region(e, ident, b.get("name") or b.get("region"), b.get("from"), b.get("until"),
                                         why)
        if action == "resume":
            return await aa.resume_region(e, ident, b.get("name") or b.get("region"), why)
        raise aa.ActionError('action: "pause" or "resume"')
    raise aa.ActionError(f"no action {what!r}", 404)


def _api(what: str):
    async def handler(request: web.Request) -> web.Response:
        ident = await request.app[UI].api_identity(request, "view")  # who first: nothing said to an unknown caller
        try:
            r = await perform(request, ident, what, await _body(request))
        except aa.ActionError as exc:
            log.warning("refused %s to %s: %s", what, authz.actor_of(ident), exc)
            return web.json_response({"error": str(exc)}, status=exc.status)
        log.info("%s by %s", r.get("done"), r.get("by"))  # never the number
        return web.json_response(r)
    return handler


# -- console ----------------------------------------------------------------------------------

# (form action, the fields, the authz action deciding who sees the form); what `perform` takes
FORMS = [
    ("dnc", "dnc_edit", [("action", ("add", "remove")), ("number", None), ("campaign", None), ("why", None)]),
    ("events", "optout_record", [("kind", aa.EVENT_KINDS), ("number", None), ("party", None), ("why", None)]),
    ("callerids", "callerid_edit", [("action", ("add", "remove", "cooldown")), ("caller_id", None),
                                    ("pool", ("", "yes")), ("campaign", None), ("until", None), ("why", None)]),
    ("override_revoke", "override_revoke", [("number", None), ("why", None)]),
    ("campaign_revoke", "campaign_revoke", [("name", None), ("why", None)]),
]


async def actions_page(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    ident = request.get(IDENT)
    if ident is None:
        raise web.HTTPSeeOther("/login")
    lang = request[LANGK]
    forms = []
    for what, action, fields in FORMS:
        if not authz.allowed(ident, action):
            continue  # the server refuses anyway; the form is shown to who may use it
        inputs = []
        for name, choices in fields:
            if choices:
                opts = "".join(f'<option value="{_e(c)}">{_e(c or "-")}</option>' for c in choices)
                inputs.append(f'<label>{_e(t(lang, "act_" + name))} <select name="{name}">{opts}</select></label>')
            else:
                inputs.append(f'<label>{_e(t(lang, "act_" + name))} <input name="{name}"></label>')
        forms.append(f'<form class="box" method="post" action="/actions/{what}" id="form-{what}">'
                     f'<h3>{_e(t(lang, "act_" + what))}</h3>{csrf_field(request)}{" ".join(inputs)} '
                     f'<button id="do-{what}">{_e(t(lang, "act_do"))}</button></form>')
    body = (f'{msg}<h2>{_e(t(lang, "actions"))}</h2><p>{_e(t(lang, "act_intro"))}</p>'
            + ("".join(forms) or f'<p id="no-actions">{_e(t(lang, "act_none"))}</p>'))
    return page(request, body, status)


async def action_form(request: web.Request) -> web.Response:
    ident = request.get(IDENT)
    if ident is None:
        raise web.HTTPSeeOther("/login")
    lang = request[LANGK]
    what = request.match_info["what"]
    b = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
    if what == "callerids":
        b["pool"] = b.get("pool") == "yes"
    try:
        r = await perform(request, ident, what, b)
    except aa.ActionError as exc:
        key = "forbidden" if exc.status == 403 else "bad_input"
        log.warning("refused %s to %s: %s", what, authz.actor_of(ident), exc)
        return await actions_page(request, f'<p class="err" id="refused">{_e(t(lang, key, msg=str(exc)))}</p>',
                                  exc.status)
    log.info("%s by %s", r.get("done"), r.get("by"))
    return await actions_page(request, f'<p class="msg" id="done">{_e(t(lang, "act_done", what=r["done"]))}</p>')


def register(app: web.Application) -> None:
    """After foureyes.register (its Ui: the API identity)."""
    app.router.add_post("/api/v1/overrides/revoke", _api("override_revoke"))
    app.router.add_post("/api/v1/campaigns/revoke", _api("campaign_revoke"))
    app.router.add_post("/api/v1/dnc", _api("dnc"))
    app.router.add_post("/api/v1/events", _api("events"))
    app.router.add_post("/api/v1/callerids", _api("callerids"))
    app.router.add_get("/actions", actions_page)
    app.router.add_post("/actions/{what:dnc|events|callerids|override_revoke|campaign_revoke}", action_form)
