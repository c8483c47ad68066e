"""Console pages and API of the four eyes (issue 15, point 4): /overrides and
/campaigns (request, approve, reject), /api/v1/overrides, /api/v1/campaigns
and /api/v1/requests. The rules are in dialguard/approvals.py (authz checks,
the approver is not the requester); this module only renders and parses.

It does not import dialguard.web.app (which registers it): the page helpers
come in a Ui bundle, so there is no import cycle.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from dialguard import approvals, authz
from dialguard.web.i18n import t
from dialguard.web.security import mask

log = logging.getLogger("dialguard.web")


@dataclass(frozen=True)
class Ui:
    page: Callable[..., web.Response]
    csrf_field: Callable[[web.Request], str]
    signed_in: Callable[[web.Request], object]
    api_identity: Callable[..., Awaitable[object]]
    lang: Callable[[web.Request], str]
    pool: Callable[[web.Request], object]
    engine: Callable[[web.Request], object]


UI = web.AppKey("foureyes_ui", Ui)


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _number(request: web.Request, ident, r: dict) -> str:
    if r["kind"] != "override":
        return ""
    ui = request.app[UI]
    try:
        e164 = ui.engine(request).sealer.open(r["number_enc"])
    except Exception:  # noqa: BLE001 - another data key: show the hash, never fail the page
        return "#" + r["number_hash"][:10]
    return e164 if authz.allowed(ident, "view_numbers") else mask(e164)


def _subject(r: dict) -> str:
    s = r["subject"]
    if r["kind"] == "override":
        lifts = ", ".join(s.get("lifts") or []) or "*"
        return f"{s.get('campaign') or '*'} · lifts {lifts} · {s.get('hours')} h"
    return (f"{s['name']}: {s['purpose']} · {s['scope']} · caps {s['caps']} · hours {s['hours']}"
            f" · {s.get('start') or '-'} → {s.get('end') or '-'}" + (f" · rules {s['rules']}" if s.get("rules") else ""))


def _table(request: web.Request, ident, rows: list[dict], kind: str, pending: bool) -> str:
    ui, lang = request.app[UI], request.app[UI].lang(request)
    if not rows:
        return f'<p class="{kind}-{"pending" if pending else "decided"}">{t(lang, "fe_none")}</p>'
    approve_action = "override_approve" if kind == "override" else "campaign_approve"
    trs = []
    for r in rows:
        cells = [f"#{r['id']}"] + ([_number(request, ident, r)] if kind == "override" else []) + [
            _subject(r), r["why"], f"{r['requested_by']} {r['requested_at'].isoformat(timespec='seconds')}"]
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
        if pending:
            # the buttons show for whoever may decide; the server checks again (role, four eyes)
            if authz.allowed(ident, approve_action) and r["requested_user"] != ident.user:
                tds += (f'<td><form method="post" action="/requests/{r["id"]}/decide" style="display:inline">'
                        f'{ui.csrf_field(request)}<input name="note" placeholder="note">'
                        f'<button name="decision" value="approve" id="approve-{r["id"]}">{t(lang, "fe_approve")}'
                        f'</button> <button name="decision" value="reject" id="reject-{r["id"]}">'
                        f'{t(lang, "fe_reject")}</button></form></td>')
            else:
                tds += "<td></td>"
        else:
            tds += (f'<td class="{r["status"]}">{_e(t(lang, "fe_" + r["status"] + "_state"))}</td>'
                    f'<td>{_e(r["decided_by"] or "")}</td>')
        trs.append(f'<tr class="request" id="request-{r["id"]}">{tds}</tr>')
    heads = ["#"] + ([t(lang, "number")] if kind == "override" else []) + [
        t(lang, "fe_request"), t(lang, "fe_why"), t(lang, "fe_requested_by")] + (
        [""] if pending else [t(lang, "fe_state"), t(lang, "fe_decided_by")])
    th = "".join(f"<th>{_e(h)}</th>" for h in heads)
    return f'<table class="{kind}-{"pending" if pending else "decided"}"><tr>{th}</tr>{"".join(trs)}</table>'


async def _page(request: web.Request, kind: str, msg: str = "", status: int = 200) -> web.Response:
    ui = request.app[UI]
    ident = ui.signed_in(request)
    lang = ui.lang(request)
    async with ui.pool(request).connection() as conn:
        pending = await approvals.listing(conn, kind, pending_only=True, engine=ui.engine(request))
        decided = [r for r in await approvals.listing(conn, kind, limit=40) if r["status"] != "pending"][:20]
    form = ""
    if authz.allowed(ident, "override_request" if kind == "override" else "campaign_request"):
        f = lambda name, label, extra="": (f'<label>{t(lang, label)} <input name="{name}" {extra}></label> ')  # noqa: E731
        if kind == "override":
            fields = (f("number", "number", "required") + f("campaign", "campaign") + f("lifts", "fe_lifts")
                      + f("hours", "fe_hours", 'value="24" required') + f("why", "fe_why", "required"))
        else:
            fields = (f("name", "fe_name", "required") + f("purpose", "fe_purpose", "required")
                      + f("scope", "fe_scope", "required") + f("caps", "fe_caps", "required")
                      + f("hours", "fe_hours_text", "required") + f("start", "fe_start") + f("end", "fe_end")
                      + f("rules", "fe_rules") + f("why", "fe_why", "required"))
        form = (f'<form class="box" method="post" action="/{kind}s/request">{ui.csrf_field(request)}{fields}'
                f'<button id="request-{kind}">{t(lang, "fe_request")}</button></form>')
    body = (f'{msg}<h2>{t(lang, kind + "s")}</h2><p>{t(lang, "fe_intro_" + kind)}</p>{form}'
            f'<h3>{t(lang, "fe_pending")}</h3>{_table(request, ident, pending, kind, True)}'
            f'<h3>{t(lang, "fe_recent")}</h3>{_table(request, ident, decided, kind, False)}')
    return ui.page(request, body, status)


async def overrides_page(request: web.Request) -> web.Response:
    return await _page(request, "override")


async def campaigns_page(request: web.Request) -> web.Response:
    return await _page(request, "campaign")


async def _request(request: web.Request, kind: str, fields: dict, ident) -> int:
    ui = request.app[UI]
    async with ui.pool(request).connection() as conn:
        if kind == "override":
            lifts = fields.get("lifts") or []
            if isinstance(lifts, str):
                lifts = [x.strip() for x in lifts.split(",") if x.strip()]
            if not isinstance(lifts, list):
                raise approvals.ApprovalError("lifts: a list of reason codes")
            rid = await approvals.request_override(conn, ui.engine(request), ident, fields.get("number"),
                                                   fields.get("why"), campaign=fields.get("campaign") or None,
                                                   lifts=lifts, hours=fields.get("hours") or 24)
        else:
            rid = await approvals.request_campaign(
                conn, ident, fields.get("name"), fields.get("why"), purpose=fields.get("purpose"),
                scope=fields.get("scope"), caps=fields.get("caps"), hours=fields.get("hours"),
                start=fields.get("start") or None, end=fields.get("end") or None, rules=fields.get("rules") or None)
    log.info("%s request %s by %s", kind, rid, authz.actor_of(ident))
    return rid


async def request_form(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = ui.signed_in(request)
    lang = ui.lang(request)
    kind = request.match_info["kind"][:-1]
    form = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
    try:
        rid = await _request(request, kind, form, ident)
    except approvals.ApprovalError as exc:
        key = "forbidden" if exc.status == 403 else "bad_input"
        return await _page(request, kind, f'<p class="err" id="refused">{_e(t(lang, key, msg=str(exc)))}</p>',
                           exc.status)
    return await _page(request, kind, f'<p class="msg" id="done">{_e(t(lang, "fe_requested", id=rid))}</p>')


async def decide_form(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = ui.signed_in(request)
    lang = ui.lang(request)
    form = await request.post()
    decision, note, rid = str(form.get("decision", "")), str(form.get("note", ""))[:1000], request.match_info["id"]
    kind = "override"
    async with ui.pool(request).connection() as conn:
        try:
            if decision == "approve":
                r = await approvals.approve(conn, ui.engine(request), ident, rid, note)
            elif decision == "reject":
                r = await approvals.reject(conn, ident, rid, note, engine=ui.engine(request))
            else:
                raise approvals.ApprovalError("decision: approve or reject")
        except approvals.ApprovalError as exc:
            cur = await conn.execute("select kind from approval_requests where id = %s",
                                     (int(rid) if rid.isdigit() else -1,))
            row = await cur.fetchone()
            key = "forbidden" if exc.status == 403 else "bad_input"
            log.warning("refused %s of request %s to %s: %s", decision, rid, ident.user, exc)
            return await _page(request, row[0] if row else kind,
                               f'<p class="err" id="refused">{_e(t(lang, key, msg=str(exc)))}</p>', exc.status)
    log.info("request %s %s by %s", r["id"], r["status"], authz.actor_of(ident))
    return await _page(request, r["kind"], f'<p class="msg" id="done">{_e(t(lang, "fe_" + r["status"], id=r["id"]))}</p>')


# -- API ----------------------------------------------------------------------------------

def _json_error(exc: approvals.ApprovalError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise approvals.ApprovalError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise approvals.ApprovalError("the body is a JSON object")
    return body


async def api_request(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = await ui.api_identity(request, "view")  # who first; the role is checked by approvals
    kind = request.match_info["kind"][:-1]
    try:
        rid = await _request(request, kind, await _body(request), ident)
    except approvals.ApprovalError as exc:
        return _json_error(exc)
    return web.json_response({"id": rid, "kind": kind, "status": "pending", "requested_by": authz.actor_of(ident)},
                             status=201)


def _api_row(request: web.Request, ident, r: dict) -> dict:
    return {"id": r["id"], "kind": r["kind"], "subject": r["subject"], "number": _number(request, ident, r) or None,
            "why": r["why"], "requested_by": r["requested_by"], "requested_at": r["requested_at"].isoformat(),
            "status": r["status"], "decided_by": r["decided_by"],
            "decided_at": r["decided_at"].isoformat() if r["decided_at"] else None,
            "note": r["decision_note"], "result": r["result"]}


async def api_list(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = await ui.api_identity(request, "view")
    kind = request.query.get("kind") or None
    if kind not in (None, "override", "campaign"):
        return web.json_response({"error": "kind: override or campaign"}, status=400)
    async with ui.pool(request).connection() as conn:
        rows = await approvals.listing(conn, kind, pending_only=request.query.get("status") == "pending",
                                       engine=ui.engine(request))
    return web.json_response({"requests": [_api_row(request, ident, r) for r in rows]})


async def api_decide(request: web.Request) -> web.Response:
    ui = request.app[UI]
    ident = await ui.api_identity(request, "view")
    decision = request.match_info["decision"]
    try:
        body = await _body(request) if request.can_read_body else {}
        async with ui.pool(request).connection() as conn:
            if decision == "approve":
                r = await approvals.approve(conn, ui.engine(request), ident, request.match_info["id"],
                                            body.get("note", ""))
            else:
                r = await approvals.reject(conn, ident, request.match_info["id"], body.get("note", ""),
                                           engine=ui.engine(request))
    except approvals.ApprovalError as exc:
        return _json_error(exc)
    log.info("request %s %s by %s", r["id"], r["status"], authz.actor_of(ident))
    return web.json_response(r)


def register(app: web.Application, ui: Ui) -> None:
    app[UI] = ui
    app.router.add_get("/overrides", overrides_page)
    app.router.add_get("/campaigns", campaigns_page)
    app.router.add_post("/{kind:overrides|campaigns}/request", request_form)
    app.router.add_post("/requests/{id:[0-9]+}/decide", decide_form)
    app.router.add_get("/api/v1/requests", api_list)
    app.router.add_post("/api/v1/{kind:overrides|campaigns}", api_request)
    app.router.add_post("/api/v1/requests/{id:[0-9]+}/{decision:approve|reject}", api_decide)

