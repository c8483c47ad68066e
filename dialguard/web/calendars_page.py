"""The console's calendars (dialguard/calendars.py; SPEC §9; as `dialguard calendar
status|history|import|activate`).

Anyone signed in sees the calendar version in effect, its imported years, until
when each calendar the rules in effect use is known (a warning within 45 days,
as the expiry check), and the versions. A calendar file (YAML, SPEC §9, or for
CN the State Council's notice text) can be previewed by anyone signed in: the
days it holds and what it changes against the packaged data; publishing it, or
putting a stored version back in effect, is `calendar_publish` (compliance or
above), audited as the signed-in user. A broken file is refused with the line
where reading stopped; nothing is published.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from aiohttp import web
from redis.exceptions import ResponseError

from dialguard import authz
from dialguard.calendar_file import CalendarFile, CalendarFileError
from dialguard.calendars import (CalendarStore, calendars_used, code_of, horizons,
                                 package_last_year, read_file)
from dialguard.rules_store import RulesStore
from dialguard.timerules import package_changes
from dialguard.web.i18n import t
from dialguard.web.ui import ENGINE, LANGK, _e, _signed_in, csrf_field, page

log = logging.getLogger("dialguard.web")
MAX_UPLOAD = 256 * 1024
WARN_DAYS = 45  # as dialguard/calendar_expiry.py
WEEKDAYS = {"en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
            "zh": ("周一", "周二", "周三", "周四", "周五", "周六", "周日")}


def _store(request: web.Request) -> CalendarStore:
    e = request.app[ENGINE]
    return CalendarStore(e.redis, e.keys, e.settings.node)


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else ""


async def calendars_page(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    _signed_in(request)
    lang = request[LANGK]
    e, store = request.app[ENGINE], _store(request)
    cals = await store.current()
    rv = await RulesStore(e.redis, e.keys).current("active")
    policy = rv.policy() if rv else e.policy
    today = (await e.now()).date()
    until = horizons(policy, cals)
    rows = []
    for cal in calendars_used(policy):
        code = code_of(cal)
        end = until[code]
        if end is None:
            state, cls = t(lang, "cal_no_end"), "ok"
        else:
            left = (end - today).days
            cls = "expired" if left < 0 else "warn" if left <= WARN_DAYS else "ok"
            state = t(lang, f"cal_{cls}", end=end.isoformat(), days=left)
        rows.append(f'<tr class="{cls}"><td>{_e(code)}</td><td>{_e(end.isoformat() if end else "—")}</td>'
                    f'<td>{_e(state)}</td><td>{_e(cal.unknown_year)}</td></tr>')
    in_force = (f'<table id="in-force" border="1" cellpadding="3"><tr><th>{t(lang, "cal_calendar")}</th>'
                f'<th>{t(lang, "cal_known_until")}</th><th>{t(lang, "status")}</th>'
                f'<th>{t(lang, "cal_after")}</th></tr>{"".join(rows)}</table>'
                f'<style>tr.warn td{{background:#ffd}}tr.expired td{{background:#fdd}}</style>') if rows else (
        f'<p id="in-force">{_e(t(lang, "cal_none_used", rules=policy.name))}</p>')
    version = (t(lang, "cal_version", n=cals.version, who=cals.actor or "?", why=cals.why or "-")
               if cals.version else t(lang, "cal_package_only"))
    years = "".join(
        f'<tr><td>{_e(f.calendar)}</td><td>{f.year}</td><td>{len(f.holidays)}</td><td>{len(f.working_days)}</td>'
        f'<td>{_e(t(lang, "cal_overrides" if _overrides(f) else "cal_adds"))}</td><td>{_e(f.source)}</td></tr>'
        for f in cals.files)
    years_html = (f'<table id="years" border="1" cellpadding="3"><tr><th>{t(lang, "cal_calendar")}</th>'
                  f'<th>{t(lang, "cal_year")}</th><th>{t(lang, "cal_holidays")}</th><th>{t(lang, "cal_working")}'
                  f'</th><th></th><th>{t(lang, "cal_source")}</th></tr>{years}</table>') if years else ""
    history = await store.history()
    active = await store.active_version()
    hist = "".join(
        f'<tr><td>{v.version}</td><td>{t(lang, "rules_active") if v.version == active else ""}</td>'
        f'<td>{_e(", ".join(f"{f.calendar} {f.year}" for f in v.files))}</td><td>{_e(v.actor)}</td>'
        f'<td>{_e(_at(v.at))}</td><td>{_e(v.why)}</td></tr>' for v in reversed(history))
    hist_html = (f'<h3>{t(lang, "cal_history")}</h3><table id="cal-versions" border="1" cellpadding="3"><tr>'
                 f'<th>{t(lang, "rules_version")}</th><th>{t(lang, "rules_in_effect")}</th>'
                 f'<th>{t(lang, "cal_years")}</th><th>{t(lang, "rules_by")}</th><th>{t(lang, "time")}</th>'
                 f'<th>{t(lang, "rules_why")}</th></tr>{hist}</table>') if history else ""
    why = f'<label>{t(lang, "reason")} <input name="why"></label>'
    forms = (f'<h3>{t(lang, "cal_import")}</h3><p>{_e(t(lang, "cal_import_help"))}</p>'
             f'<form class="box" method="post" action="/calendars/import" enctype="multipart/form-data" '
             f'id="import-form">{csrf_field(request)}<label>{t(lang, "cal_calendar")} '
             f'<input name="code" size="6" required placeholder="CN"></label> '
             f'<label>{t(lang, "cal_file")} <input type="file" name="file" required></label> {why} '
             f'<button name="action" value="preview" id="preview">{t(lang, "cal_preview")}</button> '
             f'<button name="action" value="publish" id="publish">{t(lang, "cal_publish")}</button></form>'
             f'<form class="box" method="post" action="/calendars/activate" id="cal-activate">{csrf_field(request)}'
             f'{t(lang, "rules_version")} <input name="version" size="4" required> {why} '
             f'<button id="cal-activate-btn">{t(lang, "rules_activate")}</button></form>')
    body = (f'{msg}<h2>{t(lang, "calendars")}</h2><h3>{t(lang, "cal_in_force")}</h3>{in_force}'
            f'<p id="cal-version">{_e(version)}</p>{years_html}{forms}{hist_html}')
    return page(request, body, status)


def _overrides(f: CalendarFile) -> bool:
    last = package_last_year(f.calendar)
    return f.calendar == "CN" and last is not None and f.year <= last


def _err(lang: str, msg: str) -> str:
    return f'<p class="err" id="error">{_e(t(lang, "bad_input", msg=msg))}</p>'


def _preview(lang: str, cf: CalendarFile) -> str:
    known, changed = package_changes(cf)
    days = "".join(f'<li>{d.isoformat()} {WEEKDAYS[lang][d.weekday()]}: '
                   f'{t(lang, "cal_holiday" if d in cf.holidays else "cal_working_day")}</li>'
                   for d in sorted(cf.holidays | cf.working_days))
    head = t(lang, "cal_read", code=cf.calendar, year=cf.year, h=len(cf.holidays), w=len(cf.working_days))
    if known:
        ch = "".join(f'<li>{d.isoformat()}: {t(lang, "cal_working_day" if a else "cal_off")} → '
                     f'{t(lang, "cal_working_day" if b else "cal_off")}</li>' for d, a, b in changed)
        note = f'<p>{_e(t(lang, "cal_changes", n=len(changed)))}</p><ul id="changes">{ch}</ul>'
    else:
        note = f'<p>{_e(t(lang, "cal_new_year", year=cf.year))}</p>'
    return (f'<div class="msg" id="preview-result"><p>{_e(head)}{" — " + _e(cf.source) if cf.source else ""}</p>'
            f'<ul id="days">{days}</ul>{note}</div>')


async def import_file(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    form = await request.post()
    action = form.get("action")
    if action not in ("preview", "publish"):
        return await calendars_page(request, _err(lang, "action: preview or publish"), 400)
    if action == "publish":
        try:
            authz.require(ident, "calendar_publish")
        except authz.Forbidden as exc:
            log.warning("refused calendar_publish to %s (%s)", ident.user, ident.role)
            return await calendars_page(request, f'<p class="err" id="refused">'
                                                 f'{_e(t(lang, "forbidden", msg=str(exc)))}</p>', 403)
    up = form.get("file")
    name = getattr(up, "filename", "") or ""
    if not name:
        return await calendars_page(request, _err(lang, t(lang, "cal_no_file")), 400)
    raw = up.file.read(MAX_UPLOAD + 1)
    try:
        if len(raw) > MAX_UPLOAD:
            raise CalendarFileError(f"larger than {MAX_UPLOAD // 1024} KiB: not a calendar file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CalendarFileError("not UTF-8 text") from None
        cf = read_file(text, str(form.get("code", "")))
    except (CalendarFileError, ValueError) as exc:
        return await calendars_page(request, _err(lang, t(lang, "cal_broken", file=name, msg=str(exc))), 400)
    shown = _preview(lang, cf)
    if action == "preview":
        return await calendars_page(request, shown)
    why = str(form.get("why", "")).strip()[:500]
    if not why:
        return await calendars_page(request, shown + _err(lang, t(lang, "rules_why_needed")), 400)
    n, new = await _store(request).import_file(cf, why=why, who=authz.actor_of(ident))
    log.info("calendar %s %s imported as version %s by %s", cf.calendar, cf.year, n, authz.actor_of(ident))
    done = t(lang, "cal_published" if new else "cal_unchanged", n=n, code=cf.calendar, year=cf.year)
    return await calendars_page(request, f'<p class="msg" id="done">{_e(done)}</p>{shown}')


async def activate(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        authz.require(ident, "calendar_publish")
    except authz.Forbidden as exc:
        log.warning("refused calendar_publish to %s (%s)", ident.user, ident.role)
        return await calendars_page(request, f'<p class="err" id="refused">'
                                             f'{_e(t(lang, "forbidden", msg=str(exc)))}</p>', 403)
    form = await request.post()
    why = str(form.get("why", "")).strip()[:500]
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        return await calendars_page(request, _err(lang, "version: a number"), 400)
    if not why:
        return await calendars_page(request, _err(lang, t(lang, "rules_why_needed")), 400)
    try:
        n = await _store(request).activate(version, why=why, who=authz.actor_of(ident))
    except ResponseError as exc:
        return await calendars_page(request, _err(lang, str(exc)), 400)
    log.info("calendar version %s activated by %s", n, authz.actor_of(ident))
    return await calendars_page(request, f'<p class="msg" id="done">{_e(t(lang, "cal_activated", n=n))}</p>')


def setup(app: web.Application) -> None:
    app.router.add_get("/calendars", calendars_page)
    app.router.add_post("/calendars/import", import_file)
    app.router.add_post("/calendars/activate", activate)

