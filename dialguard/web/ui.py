"""What every page module of the console shares: request and app keys, the page
frame (header, language switch, navigation), escaping, CSRF field, cookies.

app.py (login, sessions, kill switch, API) and the page modules (reports.py, ...)
import it; it imports none of them.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from dialguard import users
from dialguard.eligibility import Eligibility
from dialguard.engine import Engine
from dialguard.web.i18n import t
from dialguard.web.security import LoginLimiter, WebSettings

SESSION, PRE, LANG = "dg_session", "dg_pre", "dg_lang"
CSRF, LANGK, IDENT = web.RequestKey("csrf", str), web.RequestKey("lang", str), web.RequestKey("identity", users.Identity)
POOL = web.AppKey("pool", AsyncConnectionPool)
ENGINE = web.AppKey("engine", Engine)
ELIG = web.AppKey("elig", Eligibility)
LIMITER = web.AppKey("limiter", LoginLimiter)
WS = web.AppKey("ws", WebSettings)
# the header's links: (path, i18n key); a page module adds its own line here
NAV = [("/", "home"), ("/number", "lookup"), ("/live", "live"), ("/callerids", "callerids"),
       ("/reports", "reports"), ("/rules", "rules"),
       ("/calendars", "calendars"), ("/dnc", "dnc"), ("/overrides", "overrides"), ("/campaigns", "campaigns"),
       ("/actions", "actions")]
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- page helpers ---------------------------------------------------------------------

def _e(s) -> str:
    return html.escape(str(s), quote=True)


def page(request: web.Request, body: str, status: int = 200) -> web.Response:
    lang = request[LANGK]
    ident = request.get(IDENT)
    other = "zh" if lang == "en" else "en"
    head = f'<a href="/lang/{other}">{t(lang, "language")}</a>'
    if ident:
        head = (f'{_e(t(lang, "signed_in_as", user=ident.user, role=ident.role))} · '
                + "".join(f'<a href="{href}">{t(lang, key)}</a> · ' for href, key in NAV) +
                f'<form method="post" action="/logout" style="display:inline">{csrf_field(request)}'
                f'<button>{t(lang, "logout")}</button></form> · ' + head)
    doc = (f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f'<title>{t(lang, "title")}</title><style>body{{font-family:sans-serif;max-width:60rem;margin:1rem auto;'
           f'padding:0 1rem}}.msg{{padding:.5rem;background:#eef}}.err{{padding:.5rem;background:#fdd}}'
           f'form.box{{margin:.5rem 0;padding:.5rem;border:1px solid #ccc}}</style></head><body>'
           f'<header>{head}</header><h1>{t(lang, "title")}</h1>{body}</body></html>')
    return web.Response(text=doc, status=status, content_type="text/html")


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def csrf_field(request: web.Request) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(request.get(CSRF, ""))}">'


def _cookie(resp: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int | None,
            http_only: bool = True) -> None:
    resp.set_cookie(name, value, max_age=max_age, path="/", httponly=http_only, samesite="Strict",
                    secure=request.app[WS].tls)


def _signed_in(request: web.Request) -> users.Identity:
    ident = request.get(IDENT)
    if ident is None:
        raise web.HTTPSeeOther("/login")
    return ident
