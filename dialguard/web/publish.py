"""API of rules and calendar publication (compliance or above): POST /api/v1/rules and
POST /api/v1/calendars; the rules are in dialguard/publishing.py. The CLI with
DIALGUARD_TOKEN sends `rules apply|activate|shadow-off` and `calendar import|activate` here."""

from __future__ import annotations

import logging

from aiohttp import web

from dialguard import publishing
from dialguard.web.foureyes import UI

log = logging.getLogger("dialguard.web")


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise publishing.PublishError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise publishing.PublishError("the body is a JSON object")
    return body


async def api_rules(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = await ui.api_identity(request, "view")
    try:
        b = await _body(request)
        e, action, why = ui.engine(request), b.get("action"), b.get("why", "")
        if action == "apply":
            r = await publishing.rules_apply(e, ident, b.get("files"), shadow=b.get("shadow", False), why=why)
        elif action == "activate":
            r = await publishing.rules_activate(e, ident, b.get("version"), shadow=b.get("shadow", False), why=why)
        elif action == "shadow_off":
            r = await publishing.rules_shadow_off(e, ident, why=why)
        else:
            raise publishing.PublishError('action: "apply", "activate" or "shadow_off"')
    except publishing.PublishError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    log.info("rules %s by %s: %s", action, r["by"], r)
    return web.json_response(r)


async def api_calendars(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = await ui.api_identity(request, "view")
    try:
        b = await _body(request)
        e, action, why = ui.engine(request), b.get("action"), b.get("why", "")
        if action == "import":
            r = await publishing.calendar_import(e, ident, b.get("code"), b.get("text"), why=why)
        elif action == "activate":
            r = await publishing.calendar_activate(e, ident, b.get("version"), why=why)
        else:
            raise publishing.PublishError('action: "import" or "activate"')
    except publishing.PublishError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    log.info("calendar %s by %s: %s", action, r["by"], r)
    return web.json_response(r)


def register(app: web.Application) -> None:
    """After foureyes.register (its Ui)."""
    app.router.add_post("/api/v1/rules", api_rules)
    app.router.add_post("/api/v1/calendars", api_calendars)
