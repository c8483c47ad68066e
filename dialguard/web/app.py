"""`dialguard web`: the console (server-rendered HTML) and the API (/api/v1) in one aiohttp service.

Console: session cookie (HttpOnly, SameSite=Strict, Secure behind TLS), a
CSRF token in every form checked on every POST (login included: a pre-session
cookie), login rate-limited per user name and per source. The API takes a
Bearer token only, never the session cookie (so no CSRF there). Every admin
write asks dialguard.authz first and writes the authenticated identity to the
audit. docs/WEB.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from aiohttp import web
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ValidationError
from redis.exceptions import RedisError

from dialguard import authz, pg_cancel, users
from dialguard.callerid_health import ADMIN_COOL, report
from dialguard.config import Settings
from dialguard.eligibility import MAX_BATCH, Eligibility
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.decision.plan import ms
from dialguard.web import calendars_page, dnc_page, reports, rules_versions
from dialguard.web.i18n import LANGS, pick, t
from dialguard.web.security import LoginLimiter, WebSettings, mask
from dialguard.web.ui import (CSP, CSRF, ELIG, ENGINE, IDENT, LANG, LANGK, LIMITER, POOL, PRE, SESSION, WS, _cookie,
                              _e, _signed_in, csrf_field, page, redirect, utcnow)

log = logging.getLogger("dialguard.web")

# keys and page helpers shared by every page module: dialguard/web/ui.py


def _source(request: web.Request) -> str:
    remote = request.remote or "?"
    if remote in request.app[WS].trusted_proxies:
        fwd = request.headers.get("X-Forwarded-For", "")
        if fwd:
            return fwd.split(",")[-1].strip()
    return remote


# -- middlewares ----------------------------------------------------------------------

@web.middleware
async def security_headers(request: web.Request, handler):
    resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@web.middleware
async def store_errors(request: web.Request, handler):
    """PostgreSQL or Redis down: 503 saying which, never a crash, never a half-done write."""
    try:
        return await handler(request)
    except (psycopg.Error, PoolTimeout, RedisError, OSError) as exc:
        what = "redis" if isinstance(exc, RedisError) else "postgresql"
        log.error("%s %s: %s unavailable: %r", request.method, request.path, what, exc)
        if request.path.startswith("/api/"):
            return web.json_response({"error": f"{what} unavailable"}, status=503)
        return web.Response(text=f"503: {what} unavailable; the guard itself is not affected", status=503)


@web.middleware
async def session_and_csrf(request: web.Request, handler):
    request[LANGK] = pick(request.cookies.get(LANG), request.headers.get("Accept-Language"))
    if request.path.startswith("/api/") or request.path == "/healthz":
        return await handler(request)
    sid = request.cookies.get(SESSION)
    if sid:
        async with request.app[POOL].connection() as conn:
            cur = await conn.execute(
                "select s.csrf, u.name, u.role from web_sessions s join web_users u on u.name = s.user_name "
                "where s.id_sha256 = %s and s.expires_at > now() and not u.disabled", (users.sha256(sid),))
            row = await cur.fetchone()
        if row:
            request[CSRF] = row[0]
            request[IDENT] = users.Identity(row[1], row[2], "web")
    if request.method == "POST":
        form = await request.post()
        expected = request.get(CSRF) if request.path != "/login" else request.cookies.get(PRE)
        given = form.get("csrf", "")
        if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
            return page(request, f'<p class="err">{t(request[LANGK], "csrf")}</p>', 403)
    return await handler(request)


# -- console --------------------------------------------------------------------------

async def login_form(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    lang = request[LANGK]
    pre = request.cookies.get(PRE) or secrets.token_urlsafe(32)
    request[CSRF] = pre
    body = (f'{msg}<form class="box" method="post" action="/login">{csrf_field(request)}'
            f'<label>{t(lang, "user")} <input name="user" autocomplete="username" required></label> '
            f'<label>{t(lang, "password")} <input name="password" type="password" '
            f'autocomplete="current-password" required></label> '
            f'<button id="login">{t(lang, "login")}</button></form>')
    resp = page(request, body, status)
    _cookie(resp, request, PRE, pre, 3600)
    return resp


async def login(request: web.Request) -> web.Response:
    lang = request[LANGK]
    form = await request.post()
    name, password = str(form.get("user", "")).strip().lower(), str(form.get("password", ""))
    src, limiter, mono = _source(request), request.app[LIMITER], time.monotonic()
    wait = limiter.retry_after(name, src, mono)
    if wait > 0:
        return await login_form(request, f'<p class="err">{t(lang, "rate_limited", minutes=int(wait // 60) + 1)}'
                                         f'</p>', 429)
    async with request.app[POOL].connection() as conn:
        ident = await users.authenticate(conn, name, password)
        if ident is None:
            limiter.failed(name, src, mono)
            log.warning("failed login for %r from %s", name, src)
            return await login_form(request, f'<p class="err">{t(lang, "bad_login")}</p>', 401)
        limiter.succeeded(name)
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        hours = request.app[WS].session_hours
        await conn.execute("delete from web_sessions where expires_at < now()")
        await conn.execute("insert into web_sessions (id_sha256, user_name, csrf, expires_at) "
                           "values (%s, %s, %s, now() + %s)", (users.sha256(sid), name, csrf,
                                                               timedelta(hours=hours)))
    log.info("login %s (%s) from %s", name, ident.role, src)
    resp = redirect("/")
    _cookie(resp, request, SESSION, sid, int(hours * 3600))
    resp.del_cookie(PRE, path="/")
    return resp


async def logout(request: web.Request) -> web.Response:
    sid = request.cookies.get(SESSION)
    if sid:
        async with request.app[POOL].connection() as conn:
            await conn.execute("delete from web_sessions where id_sha256 = %s", (users.sha256(sid),))
    resp = redirect("/login")
    resp.del_cookie(SESSION, path="/")
    return resp


def _iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else ""


def _pause_label(lang: str, field: str) -> str:
    if field == "all":
        return t(lang, "all_outbound")
    if field.startswith("camp:"):
        return f'{t(lang, "campaign")} {field[5:]}'
    return f"caller ID #{field[4:10]}"


async def home(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        paused = await request.app[ENGINE].paused()
    except (RedisError, OSError) as exc:
        return page(request, f'<p class="err">Redis: {_e(type(exc).__name__)}</p>', 503)
    items = "".join(f'<li class="paused">{_e(t(lang, "paused_item", what=_pause_label(lang, f), since=s.isoformat(timespec="seconds")))}</li>'
                    for f, s in sorted(paused.items()))
    try:
        regions = await request.app[ENGINE].paused_regions()
    except (RedisError, OSError) as exc:
        return page(request, f'<p class="err">Redis: {_e(type(exc).__name__)}</p>', 503)
    items += "".join(
        f'<li class="paused region">{_e(t(lang, "paused_region", region=r["region"], start=_iso(r["from"]) or t(lang, "now"), until=_iso(r["until"]) or t(lang, "no_end"), why=r["why"] or "-"))}</li>'
        for r in regions)
    state = f'<ul id="paused">{items}</ul>' if items else f'<p id="paused">{t(lang, "paused_none")}</p>'
    forms = ""
    if authz.allowed(ident, "pause"):
        why = (f'<label>{t(lang, "reason")} <input name="why"></label>')
        forms = (
            f'<form class="box" method="post" action="/killswitch">{csrf_field(request)}'
            f'<input type="hidden" name="scope" value="all">{why} '
            f'<button name="action" value="pause" id="pause-all">{t(lang, "pause_all")}</button> '
            f'<button name="action" value="resume" id="resume-all">{t(lang, "resume_all")}</button></form>'
            f'<form class="box" method="post" action="/killswitch">{csrf_field(request)}'
            f'<input type="hidden" name="scope" value="campaign">'
            f'<label>{t(lang, "campaign")} <input name="name" required></label> {why} '
            f'<button name="action" value="pause">{t(lang, "pause_campaign")}</button> '
            f'<button name="action" value="resume">{t(lang, "resume_campaign")}</button></form>'
            # a jurisdiction for a window (#19): ISO 3166-2, times with their offset
            f'<form class="box" method="post" action="/killswitch" id="region-form">{csrf_field(request)}'
            f'<input type="hidden" name="scope" value="region">'
            f'<label>{t(lang, "region")} <input name="name" placeholder="US-LA" required></label> '
            f'<label>{t(lang, "from")} <input name="from" placeholder="2026-08-29T00:00:00-05:00"></label> '
            f'<label>{t(lang, "until")} <input name="until" placeholder="2026-09-05T00:00:00-05:00"></label> {why} '
            f'<button name="action" value="pause" id="pause-region">{t(lang, "pause_region")}</button> '
            f'<button name="action" value="resume" id="resume-region">{t(lang, "resume_region")}</button></form>')
    else:
        # the viewer sees the switch, but the server refuses it (the button is not the check)
        forms = (f'<form class="box" method="post" action="/killswitch">{csrf_field(request)}'
                 f'<input type="hidden" name="scope" value="all">'
                 f'<button name="action" value="pause" id="pause-all">{t(lang, "pause_all")}</button></form>')
    return page(request, f'{msg}<h2>{t(lang, "killswitch")}</h2>{state}{forms}', status)


async def killswitch(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    form = await request.post()
    action, scope, name = str(form.get("action", "")), str(form.get("scope", "all")), str(form.get("name", ""))
    why = str(form.get("why", ""))[:500]
    if scope == "region":
        from dialguard import admin_actions
        from dialguard.web.admin_api import perform
        try:
            r = await perform(request, ident, "killswitch_region", {k: str(v) for k, v in form.items()})
        except admin_actions.ActionError as exc:
            key = "forbidden" if exc.status == 403 else "bad_input"
            log.warning("refused region %s to %s: %s", action, ident.user, exc)
            return await home(request, f'<p class="err" id="refused">{_e(t(lang, key, msg=str(exc)))}</p>',
                              exc.status)
        log.info("%s region %s by %s", action, r["name"], r["by"])
        return await home(request, f'<p class="msg" id="done">{_e(t(lang, "done_" + action, what=r["name"]))}</p>')
    if action not in ("pause", "resume") or scope not in ("all", "campaign") or (scope == "campaign" and not name):
        return await home(request, f'<p class="err">{_e(t(lang, "bad_input", msg="action/scope"))}</p>', 400)
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        log.warning("refused %s to %s (%s)", action, ident.user, ident.role)
        return await home(request, f'<p class="err" id="refused">{_e(t(lang, "forbidden", msg=str(exc)))}</p>',
                          403)
    engine = request.app[ENGINE]
    fn = engine.pause if action == "pause" else engine.resume
    try:
        await fn(scope, name or None, why=why, actor=authz.actor_of(ident))
    except (RedisError, OSError) as exc:
        return await home(request, f'<p class="err">Redis: {_e(type(exc).__name__)}</p>', 503)
    what = t(lang, "all_outbound") if scope == "all" else f'{t(lang, "campaign")} {name}'
    log.info("%s %s by %s", action, scope + (" " + name if name else ""), authz.actor_of(ident))
    return await home(request, f'<p class="msg" id="done">{_e(t(lang, "done_" + action, what=what))}</p>')


async def number_page(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    q = request.query
    number, campaign, agent = q.get("n", ""), q.get("campaign", ""), q.get("agent", "") or "lookup"
    result, a = "", None
    if number and campaign:
        try:
            req = DecisionRequest(number=number, campaign=campaign, agent=agent)
        except ValidationError as exc:
            result = f'<p class="err">{_e(t(lang, "bad_input", msg=exc.errors()[0]["msg"]))}</p>'
        else:
            a = await request.app[ELIG].check(req)
            show = (lambda n: n) if authz.allowed(ident, "view_numbers") else mask
            d = a.as_dict(show)
            rows = "".join(f"<li><code>{_e(r)}</code>: {_e(a.explanations.get(r, ''))}</li>" for r in a.reasons)
            nxt = d["next_eligible_at"] or (t(lang, "next_unknown") if a.next_unknown
                                            else t(lang, "never") if a.decision == "deny" else "")
            result = (f'<table id="result"><tr><th>{t(lang, "number")}</th><td id="number">{_e(d["number"] or "-")}</td></tr>'
                      f'<tr><th>{t(lang, "status")}</th><td id="decision" class="{a.decision}">'
                      f'{t(lang, a.decision)}</td></tr><tr><th>{t(lang, "why")}</th><td><ul>{rows}</ul></td></tr>'
                      f'<tr><th>{t(lang, "next_eligible")}</th><td>{_e(nxt)}</td></tr></table>')
    if number and campaign and a is not None and a.e164:
        result += await _history(request, a.e164)
    shown = number if authz.allowed(ident, "view_numbers") else ""
    body = (f'<h2>{t(lang, "lookup")}</h2><form class="box" method="get" action="/number">'
            f'<label>{t(lang, "number")} <input name="n" value="{_e(shown)}" required></label> '
            f'<label>{t(lang, "campaign")} <input name="campaign" value="{_e(campaign)}" required></label> '
            f'<label>{t(lang, "agent")} <input name="agent" value="{_e(q.get("agent", ""))}"></label> '
            f'<button>{t(lang, "check")}</button></form>{result}')
    return page(request, body)


async def _history(request: web.Request, e164: str) -> str:
    """The number's last decisions from the audit (keyed hash: no plaintext number is queried)."""
    lang = request[LANGK]
    tag = request.app[ENGINE].keys.number_tag(e164)
    async with request.app[POOL].connection() as conn:
        cur = await conn.execute("select decided_at, campaign, agent, allowed, reasons from audit_decisions "
                                 "where number_hash = %s order by decided_at desc limit 20", (tag,))
        rows = await cur.fetchall()
    if not rows:
        return f'<h3>{t(lang, "history")}</h3><p id="history">{t(lang, "no_history")}</p>'
    trs = "".join(f"<tr><td>{_e(r[0].isoformat(timespec='seconds'))}</td><td>{_e(r[1])}</td><td>{_e(r[2])}</td>"
                  f"<td>{'✓' if r[3] else '✗'}</td><td>{_e(', '.join(r[4]))}</td></tr>" for r in rows)
    return (f'<h3>{t(lang, "history")}</h3><table id="history"><tr><th>{t(lang, "time")}</th>'
            f'<th>{t(lang, "campaign")}</th><th>{t(lang, "agent")}</th><th>{t(lang, "allowed_col")}</th>'
            f'<th>{t(lang, "why")}</th></tr>{trs}</table>')


async def live(request: web.Request) -> web.Response:
    """Decisions per minute, denials by reason and per campaign (audit, by recorded time), guard health."""
    _signed_in(request)
    lang = request[LANGK]
    async with request.app[POOL].connection() as conn:
        per_min = await (await conn.execute(
            "select date_trunc('minute', recorded_at) m, count(*), count(*) filter (where not allowed) "
            "from audit_decisions where recorded_at > now() - interval '15 minutes' group by m order by m desc"
        )).fetchall()
        by_reason = await (await conn.execute(
            "select r, count(*) from audit_decisions, unnest(reasons) r "
            "where recorded_at > now() - interval '1 hour' and not allowed group by r order by 2 desc")).fetchall()
        by_camp = await (await conn.execute(
            "select campaign, count(*), count(*) filter (where not allowed) from audit_decisions "
            "where recorded_at > now() - interval '1 hour' group by campaign order by 2 desc limit 50")).fetchall()
    e = request.app[ENGINE]
    backlog = await e.redis.xlen(e.keys.audit)
    paused = await e.paused()

    def table(tid, heads, rows):
        th = "".join(f"<th>{_e(h)}</th>" for h in heads)
        trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table id="{tid}"><tr>{th}</tr>{trs}</table>'

    body = (f'<h2>{t(lang, "live")}</h2><p><a href="/live">↻</a></p>'
            f'<h3>{t(lang, "health")}</h3><ul id="health"><li>Redis: ok</li>'
            f'<li>{t(lang, "backlog")}: {backlog:,}</li>'
            + "".join(f"<li>{_e(t(lang, 'paused_item', what=_pause_label(lang, f), since=v.isoformat(timespec='seconds')))}</li>"
                      for f, v in sorted(paused.items())) + "</ul>"
            f'<h3>{t(lang, "per_minute")}</h3>'
            + table("per-minute", [t(lang, "minute"), t(lang, "decisions"), t(lang, "denied")],
                    [(m.strftime("%H:%M"), n, d) for m, n, d in per_min])
            + f'<h3>{t(lang, "by_reason")}</h3>' + table("by-reason", [t(lang, "why"), t(lang, "denied")], by_reason)
            + f'<h3>{t(lang, "by_campaign")}</h3>'
            + table("by-campaign", [t(lang, "campaign"), t(lang, "decisions"), t(lang, "denied")], by_camp))
    resp = page(request, body)
    resp.headers["Refresh"] = "10"  # no JavaScript: the browser reloads the page
    return resp


async def callerids(request: web.Request) -> web.Response:
    """Each pool caller ID's health figures and cool-down (callerid_health.report,
    the data of `dialguard callerid health`); read-only, numbers masked below supervisor."""
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        authz.require(ident, "view_callerids")
    except authz.Forbidden as exc:
        return page(request, f'<p class="err">{_e(t(lang, "forbidden", msg=str(exc)))}</p>', 403)
    e = request.app[ENGINE]
    rows = await report(e, ms(await e.now()))
    show = (lambda n: n) if authz.allowed(ident, "view_numbers") else mask
    pct = lambda v: f"{v:.1%}"  # noqa: E731
    trs = []
    for r in rows:
        f = r["figures"]
        if r["cooldown_until"]:
            until = datetime.fromtimestamp(r["cooldown_until"] / 1000, timezone.utc).isoformat(timespec="seconds")
            why = r["cooldown_reason"]
            cool = t(lang, "cool_until", until=until, why=t(lang, "cool_admin") if why == ADMIN_COOL else why)
        else:
            cool = t(lang, "cool_none")
        cells = (show(r["caller_id"]), ", ".join(r["pools"]), f["calls"], pct(f["answer_rate"]),
                 pct(f["short_answer_rate"]), pct(f["rejection_rate"]), f["run"],
                 f'{f["complaints_per_1000"]:.1f}', f'{f["optouts_per_1000"]:.1f}')
        trs.append('<tr class="cid">' + "".join(f"<td>{_e(c)}</td>" for c in cells)
                   + f'<td class="{"cooling" if r["cooldown_until"] else "ok"}">{_e(cool)}</td></tr>')
    heads = ("callerid", "pools", "calls", "answer_rate", "short_rate", "reject_rate", "run", "complaints_1k",
             "optouts_1k", "cooldown")
    table = (f'<table id="callerids"><tr>{"".join(f"<th>{t(lang, h)}</th>" for h in heads)}</tr>{"".join(trs)}'
             f'</table>') if rows else f'<p id="callerids">{t(lang, "cid_none")}</p>'
    return page(request, f'<h2>{t(lang, "callerids")}</h2><p>{_e(t(lang, "cid_intro"))}</p>{table}')


async def set_lang(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    if lang not in LANGS:
        raise web.HTTPNotFound()
    resp = redirect("/" if request.get(IDENT) else "/login")
    _cookie(resp, request, LANG, lang, 365 * 86400)
    return resp


async def healthz(request: web.Request) -> web.Response:
    problems = []
    try:
        async with request.app[POOL].connection(timeout=2) as conn:
            await conn.execute("select 1 from web_users limit 1")
    except Exception as exc:  # noqa: BLE001 - any failure is "not healthy"
        problems.append(f"postgresql: {type(exc).__name__}")
    try:
        await request.app[ENGINE].redis.ping()
    except (RedisError, OSError) as exc:
        problems.append(f"redis: {type(exc).__name__}")
    return web.json_response({"ok": not problems, "problems": problems}, status=503 if problems else 200)


# -- API --------------------------------------------------------------------------------

async def _api_identity(request: web.Request, action: str = "eligibility") -> users.Identity:
    auth = request.headers.get("Authorization", "")
    ident = None
    if auth.startswith("Bearer "):
        async with request.app[POOL].connection() as conn:
            ident = await users.token_identity(conn, auth[7:].strip(), utcnow())
    if ident is None:
        raise web.HTTPUnauthorized(text=json.dumps({"error": "a valid API token is required (Authorization: "
                                                            "Bearer dgt_...)"}),
                                   content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        raise web.HTTPForbidden(text=json.dumps({"error": str(exc)}), content_type="application/json") from None
    return ident


def _bad(msg: str) -> web.Response:
    return web.json_response({"error": msg}, status=400)


def _shower(ident: users.Identity):
    return (lambda n: n) if authz.allowed(ident, "view_numbers") else mask


async def api_eligibility_get(request: web.Request) -> web.Response:
    ident = await _api_identity(request)
    q = request.query
    try:
        req = DecisionRequest(number=q.get("number", ""), campaign=q.get("campaign", ""),
                              agent=q.get("agent") or "eligibility", caller_id=q.get("caller_id") or None,
                              subject=q.get("subject") or None)
    except ValidationError as exc:
        return _bad("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    a = await request.app[ELIG].check(req)
    return web.json_response(a.as_dict(_shower(ident)))


async def api_eligibility_post(request: web.Request) -> web.Response:
    ident = await _api_identity(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _bad("the body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("leads"), list):
        return _bad('expected {"campaign": ..., "agent": ..., "leads": [{"number": ...}, ...]}')
    leads = body["leads"]
    if len(leads) > MAX_BATCH:
        return web.json_response({"error": f"at most {MAX_BATCH:,} leads per request, got {len(leads):,}"},
                                 status=413)
    reqs = []
    for i, lead in enumerate(leads):
        if isinstance(lead, str):
            lead = {"number": lead}
        if not isinstance(lead, dict):
            return _bad(f"leads[{i}]: a number or an object with number")
        try:
            reqs.append(DecisionRequest(number=lead.get("number", ""),
                                        campaign=lead.get("campaign") or body.get("campaign", ""),
                                        agent=lead.get("agent") or body.get("agent") or "eligibility",
                                        caller_id=lead.get("caller_id") or body.get("caller_id"),
                                        subject=lead.get("subject")))
        except ValidationError as exc:
            return _bad(f"leads[{i}]: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                    for e in exc.errors()))
    answers = await request.app[ELIG].check_many(reqs)
    show = _shower(ident)
    return web.json_response({"results": [a.as_dict(show) for a in answers]})


def _paused_json(paused: dict) -> list[dict]:
    return [{"switch": f, "since": v.isoformat()} for f, v in sorted(paused.items())]


async def _regions_json(engine) -> list[dict]:
    return [{"region": r["region"], "from": r["from"].isoformat() if r["from"] else None,
             "until": r["until"].isoformat() if r["until"] else None, "why": r["why"]}
            for r in await engine.paused_regions()]


async def api_killswitch_get(request: web.Request) -> web.Response:
    await _api_identity(request, "view")
    e = request.app[ENGINE]
    return web.json_response({"paused": _paused_json(await e.paused()), "regions": await _regions_json(e)})


async def api_killswitch_post(request: web.Request) -> web.Response:
    """The kill switch for machines (and the CLI with a token): the same authz check and audit as the console."""
    ident = await _api_identity(request, "view")  # who first: nothing is said to an unknown caller
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _bad("the body is not JSON")
    if not isinstance(body, dict):
        return _bad('expected {"action": "pause"|"resume", "scope": "all"|"campaign", "name": ..., "why": ...}')
    action, scope, name = body.get("action"), body.get("scope", "all"), body.get("name")
    why = body.get("why", "")
    if scope == "region":  # a jurisdiction for a window (#19): dialguard/admin_actions.py
        from dialguard import admin_actions
        from dialguard.web.admin_api import perform
        try:
            r = await perform(request, ident, "killswitch_region", body)
        except admin_actions.ActionError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        log.info("%s region %s by %s", r["done"], r["name"], r["by"])
        return web.json_response({**r, "paused": _paused_json(await request.app[ENGINE].paused()),
                                  "regions": await _regions_json(request.app[ENGINE])})
    if action not in ("pause", "resume"):
        return _bad('action: "pause" or "resume"')
    if scope not in ("all", "campaign") or (scope == "campaign" and not (isinstance(name, str) and name)):
        return _bad('scope: "all", or "campaign" with a name')
    if not isinstance(why, str) or len(why) > 500:
        return _bad("why: text, at most 500 characters")
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        return web.json_response({"error": str(exc)}, status=403)
    engine = request.app[ENGINE]
    fn = engine.pause if action == "pause" else engine.resume
    await fn(scope, name if scope == "campaign" else None, why=why, actor=authz.actor_of(ident))
    log.info("%s %s by %s", action, scope + (" " + name if scope == "campaign" else ""), authz.actor_of(ident))
    return web.json_response({"done": action, "by": authz.actor_of(ident),
                              "paused": _paused_json(await engine.paused())})


async def openapi(request: web.Request) -> web.Response:
    from dialguard.web.openapi import SPEC
    return web.json_response(SPEC)


# -- the application -------------------------------------------------------------------

async def _reconcile_at_start(pool, engine) -> None:
    """Approvals applied in Redis whose PostgreSQL commit failed: completed (approvals.reconcile)."""
    from dialguard import approvals
    try:
        async with pool.connection(timeout=10) as conn:
            n = await approvals.reconcile(conn, engine)
        if n:
            log.warning("completed %d approval(s) in PostgreSQL from Redis", n)
    except (psycopg.Error, PoolTimeout, RedisError, OSError) as exc:
        log.warning("approvals not reconciled at start (done on the next listing or decision): %r", exc)


def make_app(settings: Settings | None = None, ws: WebSettings | None = None) -> web.Application:
    settings = settings or Settings()
    app = web.Application(middlewares=[security_headers, store_errors, session_and_csrf], client_max_size=4 * 1024 * 1024)
    app[WS] = ws or WebSettings()
    app[LIMITER] = LoginLimiter()

    async def lifecycle(app: web.Application):
        # Not waiting for PostgreSQL: the service starts and says 503 (healthz too) until it answers.
        pg_cancel.install()  # its waits keep a cancel (Python 3.11)
        pool = AsyncConnectionPool(settings.pg_dsn, min_size=1, max_size=8, open=False, timeout=3,
                                   kwargs={"autocommit": True, "application_name": "dialguard-web",
                                           "connect_timeout": 3})
        await pool.open(wait=False)
        app[POOL] = pool
        app[ENGINE] = await Engine.create(settings)
        app[ELIG] = Eligibility(await Engine.create(settings, audit=False))
        task = asyncio.create_task(_reconcile_at_start(pool, app[ENGINE]))  # not delaying the start
        await asyncio.to_thread(users.warm_up)
        yield
        task.cancel()
        await app[ELIG].engine.close()
        await app[ENGINE].close()
        await pool.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
    app.router.add_post("/killswitch", killswitch)
    app.router.add_get("/number", number_page)
    app.router.add_get("/live", live)
    app.router.add_get("/callerids", callerids)
    app.router.add_get("/lang/{lang}", set_lang)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/eligibility", api_eligibility_get)
    app.router.add_post("/api/v1/eligibility", api_eligibility_post)
    app.router.add_get("/api/v1/killswitch", api_killswitch_get)
    app.router.add_post("/api/v1/killswitch", api_killswitch_post)
    app.router.add_get("/api/v1/openapi.json", openapi)
    reports.setup(app)
    rules_versions.setup(app)
    calendars_page.setup(app)
    dnc_page.setup(app)
    from dialguard.web import foureyes, publish  # four eyes (/overrides, /campaigns), rules and calendar API
    foureyes.register(app, foureyes.Ui(page=page, csrf_field=csrf_field, signed_in=_signed_in,
                                       api_identity=_api_identity, lang=lambda r: r[LANGK],
                                       pool=lambda r: r.app[POOL], engine=lambda r: r.app[ENGINE]))
    publish.register(app)
    from dialguard.web import admin_api  # the other admin writes (dialguard/admin_actions.py)
    admin_api.register(app)
    return app


def run(host: str | None = None, port: int | None = None) -> None:
    ws = WebSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(make_app(ws=ws), host=host or ws.host, port=port or ws.port, access_log=None,
                print=lambda s: log.info("%s", s))
