"""The console's rules versions (dialguard/rules_store.py, as `dialguard rules
history|diff|apply|activate|shadow-off` and `dialguard report --shadow`).

Anyone signed in sees the versions, the diff between two and the shadow report
(numbers masked below supervisor). Publishing (apply shipped packs or an uploaded
rules file, activate a stored version, end the shadow trial) is `rules_apply`:
compliance or above, checked by the server whatever the page shows; the audit
names the signed-in user. The server never reads a file path typed in a form:
packs are the shipped ones by name, other rules come as an upload.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import psycopg
from aiohttp import web
from redis.exceptions import ResponseError

from dialguard import authz
from dialguard.audit import report as rp
from dialguard.rules import RulesError, pack_source, shipped_packs
from dialguard.rules_store import RulesStore, bundle_sources, diff
from dialguard.web.i18n import t
from dialguard.web.reports import BadParams, params
from dialguard.web.security import mask
from dialguard.web.ui import ENGINE, LANGK, _e, _signed_in, csrf_field, page, utcnow

log = logging.getLogger("dialguard.web")
MAX_UPLOAD = 512 * 1024
SHADOW_ROWS = 200


def _store(request: web.Request) -> RulesStore:
    e = request.app[ENGINE]
    return RulesStore(e.redis, e.keys, e.settings.node)


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else ""


def _diff_html(text: str) -> str:
    def cls(line: str) -> str:
        if line.startswith(("+++", "---")):
            return "h"
        return {"+": "add", "-": "del", "@": "h"}.get(line[:1], "")
    return ('<pre id="diff" style="background:#f8f8f8;padding:.5rem;overflow-x:auto">'
            + "".join(f'<span class="{cls(ln)}">{_e(ln)}</span>' for ln in text.splitlines(keepends=True))
            + "</pre><style>#diff .add{background:#dfd}#diff .del{background:#fdd}#diff .h{color:#666}</style>")


def _shadow(dsn: str, p: dict, show) -> rp.ShadowReport:
    label = rp.number_labeler(show)

    with psycopg.connect(dsn, autocommit=True, connect_timeout=3, application_name="dialguard-web-rules") as conn:
        return rp.build_shadow(conn, p["a"], p["b"], p["tz"], number_label=label)


async def rules_page(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    store, q = _store(request), request.query
    versions = await store.history()
    active, shadow = await store.in_effect()
    role = {active: t(lang, "rules_active"), shadow: t(lang, "rules_shadow")}
    rows = "".join(
        f'<tr class="version"><td>{v.version}</td><td>{_e(role.get(v.version, ""))}</td><td>{_e(v.name)}</td>'
        f'<td><code>{_e(v.hash)}</code></td><td>{_e(v.actor)}</td><td>{_e(_at(v.at))}</td><td>{_e(v.why)}</td></tr>'
        for v in reversed(versions))
    listing = (f'<table id="versions" border="1" cellpadding="3"><tr><th>{t(lang, "rules_version")}</th>'
               f'<th>{t(lang, "rules_in_effect")}</th><th>{t(lang, "rules_packs")}</th><th>hash</th>'
               f'<th>{t(lang, "rules_by")}</th><th>{t(lang, "time")}</th><th>{t(lang, "rules_why")}</th></tr>'
               f'{rows}</table>') if versions else (
        f'<p id="versions">{_e(t(lang, "rules_none", configured=request.app[ENGINE].settings.rules))}</p>')

    # diff between two stored versions
    out = ""
    nums = [v.version for v in versions]
    a_s, b_s = q.get("diff_from", ""), q.get("diff_to", "")
    if a_s or b_s:
        try:
            a, b = await store.get(int(a_s)), await store.get(int(b_s))
        except ValueError:
            a = b = None
        if a is None or b is None:
            out = f'<p class="err" id="diff">{_e(t(lang, "rules_no_version", a=a_s, b=b_s))}</p>'
        else:
            text = diff(a.policy(), b.policy(), f"version {a.version}", f"version {b.version}")
            out = _diff_html(text) if text else f'<p id="diff">{t(lang, "rules_same")}</p>'
    sel = lambda name, cur: (f'<select name="{name}">' + "".join(  # noqa: E731
        f'<option{" selected" if str(n) == cur else ""}>{n}</option>' for n in reversed(nums)) + "</select>")
    diff_form = (f'<form class="box" method="get" action="/rules" id="diff-form">{t(lang, "rules_diff")}: '
                 f'{sel("diff_from", a_s or str(nums[-2] if len(nums) > 1 else ""))} → '
                 f'{sel("diff_to", b_s or str(nums[-1] if nums else ""))} '
                 f'<button id="show-diff">{t(lang, "rules_show_diff")}</button></form>') if nums else ""

    # publishing: compliance; shown to everyone, refused by the server below compliance
    packs = "".join(f'<label><input type="checkbox" name="pack" value="{_e(p)}"> {_e(p)}</label> '
                    for p in shipped_packs())
    why = f'<label>{t(lang, "reason")} <input name="why" required></label>'
    mode = (f'<label><select name="mode"><option value="active">{t(lang, "rules_active")}</option>'
            f'<option value="shadow">{t(lang, "rules_shadow")}</option></select></label>')
    publish = (
        f'<h3>{t(lang, "rules_publish")}</h3><p>{_e(t(lang, "rules_publish_who"))}</p>'
        f'<form class="box" method="post" action="/rules/apply" enctype="multipart/form-data" id="apply-form">'
        f'{csrf_field(request)}<div>{packs}</div><label>{t(lang, "rules_upload")} '
        f'<input type="file" name="file" accept=".yaml,.yml"></label><br>{mode} {why} '
        f'<button id="apply">{t(lang, "rules_apply")}</button></form>'
        f'<form class="box" method="post" action="/rules/activate" id="activate-form">{csrf_field(request)}'
        f'{t(lang, "rules_version")} <input name="version" size="4" required> {mode} {why} '
        f'<button id="activate">{t(lang, "rules_activate")}</button></form>'
        f'<form class="box" method="post" action="/rules/shadow-off">{csrf_field(request)}{why} '
        f'<button id="shadow-off">{t(lang, "rules_shadow_off")}</button></form>')

    # the shadow report over a date range
    shadow_html = ""
    settings = request.app[ENGINE].settings
    try:
        p = params(q, settings.site_timezone, utcnow())
    except BadParams as exc:
        shadow_html = f'<p class="err" id="shadow-report">{_e(t(lang, "bad_input", msg=str(exc)))}</p>'
    else:
        show = (lambda n: n) if authz.allowed(ident, "view_numbers") else mask
        srep = await asyncio.to_thread(_shadow, settings.pg_dsn, p, show)
        heads = ("shadow_version", "evaluated", "same_verdict", "allow_to_deny", "deny_to_allow")
        summ = "".join("<tr>" + "".join(f"<td>{_e(s[h])}</td>" for h in heads)
                       + f'<td>{_e(", ".join(f"{r} {n}" for r, n in s["allow_to_deny_by_reason"].items()))}</td>'
                       + "</tr>" for s in srep.summary)
        shadow_html = ('<table id="shadow-report" border="1" cellpadding="3"><tr>'
                       + "".join(f"<th>{h}</th>" for h in heads) + "<th>allow_to_deny_by_reason</th></tr>"
                       + summ + "</table>") if srep.summary else f'<p id="shadow-report">{t(lang, "rules_no_shadow")}</p>'
        if srep.rows:
            shown = srep.rows[:SHADOW_ROWS]
            shadow_html += (f'<p>{_e(t(lang, "rules_shadow_rows", n=len(srep.rows), shown=len(shown)))}</p>'
                            f'<div style="overflow-x:auto;font-size:.8rem"><table id="shadow-rows" border="1">'
                            + "<tr>" + "".join(f"<th>{c}</th>" for c in srep.columns) + "</tr>"
                            + "".join("<tr>" + "".join(f"<td>{_e(rp._cell(v))}</td>" for v in r) + "</tr>"
                                      for r in shown) + "</table></div>")
        shadow_html = (f'<form class="box" method="get" action="/rules">{t(lang, "rep_from")} '
                       f'<input name="from" value="{_e(p["from"])}" size="10"> {t(lang, "rep_to")} '
                       f'<input name="to" value="{_e(p["to"])}" size="10"> <button>{t(lang, "rep_show")}</button>'
                       f'</form>') + shadow_html
    body = (f'{msg}<h2>{t(lang, "rules")}</h2>{listing}{diff_form}{out}{publish}'
            f'<h3>{t(lang, "rules_shadow_report")}</h3>{shadow_html}')
    return page(request, body, status)


async def _guarded(request: web.Request):
    """(identity, form) when the signed-in user may publish rules, else the refusal page."""
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        authz.require(ident, "rules_apply")
    except authz.Forbidden as exc:
        log.warning("refused rules_apply to %s (%s)", ident.user, ident.role)
        return ident, None, await rules_page(
            request, f'<p class="err" id="refused">{_e(t(lang, "forbidden", msg=str(exc)))}</p>', 403)
    return ident, await request.post(), None


def _err(lang: str, msg: str) -> str:
    return f'<p class="err" id="error">{_e(t(lang, "bad_input", msg=msg))}</p>'


async def apply(request: web.Request) -> web.Response:
    ident, form, refused = await _guarded(request)
    if refused:
        return refused
    lang = request[LANGK]
    why = str(form.get("why", "")).strip()[:500]
    shadow = form.get("mode") == "shadow"
    known = set(shipped_packs())
    names = [str(v) for v in form.getall("pack", [])]
    if not why:
        return await rules_page(request, _err(lang, t(lang, "rules_why_needed")), 400)
    try:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RulesError(f"no shipped rule pack {', '.join(unknown)}")
        sources = [pack_source(n) for n in names]
        up = form.get("file")
        if up is not None and getattr(up, "filename", None):
            raw = up.file.read(MAX_UPLOAD + 1)
            if len(raw) > MAX_UPLOAD:
                raise RulesError(f"{up.filename}: larger than {MAX_UPLOAD // 1024} KiB")
            try:
                sources.append((f"upload:{up.filename}", raw.decode("utf-8")))
            except UnicodeDecodeError:
                raise RulesError(f"{up.filename}: not UTF-8 text") from None
        policy, b = bundle_sources(sources)
    except RulesError as exc:
        return await rules_page(request, _err(lang, str(exc)), 400)
    store = _store(request)
    n, changed = await store.apply_bundle(b, shadow=shadow, why=why, who=authz.actor_of(ident))
    role = t(lang, "rules_shadow" if shadow else "rules_active")
    log.info("rules version %s (%s) %s by %s", n, policy.name, "shadow" if shadow else "active",
             authz.actor_of(ident))
    key = "rules_applied" if changed else "rules_unchanged"
    return await rules_page(request, f'<p class="msg" id="done">{_e(t(lang, key, n=n, role=role))}</p>')


async def activate(request: web.Request) -> web.Response:
    ident, form, refused = await _guarded(request)
    if refused:
        return refused
    lang = request[LANGK]
    why = str(form.get("why", "")).strip()[:500]
    shadow = form.get("mode") == "shadow"
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        return await rules_page(request, _err(lang, "version: a number"), 400)
    if not why:
        return await rules_page(request, _err(lang, t(lang, "rules_why_needed")), 400)
    try:
        n = await _store(request).activate(version, shadow=shadow, why=why, who=authz.actor_of(ident))
    except ResponseError as exc:
        return await rules_page(request, _err(lang, str(exc)), 400)
    role = t(lang, "rules_shadow" if shadow else "rules_active")
    log.info("rules version %s activated (%s) by %s", n, "shadow" if shadow else "active", authz.actor_of(ident))
    return await rules_page(request, f'<p class="msg" id="done">{_e(t(lang, "rules_applied", n=n, role=role))}</p>')


async def shadow_off(request: web.Request) -> web.Response:
    ident, form, refused = await _guarded(request)
    if refused:
        return refused
    lang = request[LANGK]
    why = str(form.get("why", "")).strip()[:500]
    if not why:
        return await rules_page(request, _err(lang, t(lang, "rules_why_needed")), 400)
    had = await _store(request).shadow_off(why=why, who=authz.actor_of(ident))
    log.info("shadow rules off by %s", authz.actor_of(ident))
    return await rules_page(request, f'<p class="msg" id="done">'
                                     f'{t(lang, "rules_shadow_ended" if had else "rules_no_shadow_set")}</p>')


def setup(app: web.Application) -> None:
    app.router.add_get("/rules", rules_page)
    app.router.add_post("/rules/apply", apply)
    app.router.add_post("/rules/activate", activate)
    app.router.add_post("/rules/shadow-off", shadow_off)
