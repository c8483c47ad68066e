"""The console's reports: `dialguard report` (dialguard/audit/report.py) over a date
range, grouped by campaign, agent, caller ID or reason, as a page with charts
(server-rendered SVG, no script) and as CSV, XLSX or PDF downloads.

Viewer or above (`report_export`); caller IDs masked below supervisor
(`view_numbers`), in the page and in every export alike. The query runs in a
thread on a connection of its own (the service login: it reads the audit),
so a long range does not stall the console.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from aiohttp import web

from dialguard import authz, users
from dialguard.audit import report as rp
from dialguard.web.i18n import t
from dialguard.web.security import mask
from dialguard.web.ui import ENGINE, LANGK, _e, _signed_in, page, utcnow

log = logging.getLogger("dialguard.web")

FORMATS = {"csv": "text/csv; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
           "pdf": "application/pdf"}
MAX_DAYS = 366
TOP = 20  # bars per chart


class BadParams(ValueError):
    pass


def params(query, default_tz: str, today: datetime) -> dict:
    """from, to (local days, the end included), by, tz of a report request; BadParams says what is wrong."""
    tz = (query.get("tz") or default_tz).strip()
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadParams(f"unknown time zone {tz!r}") from None
    by = query.get("by") or "campaign"
    if by not in rp.GROUPS:
        raise BadParams(f"by is one of {', '.join(rp.GROUPS)}, not {by!r}")
    day = today.astimezone(zone).date()
    to_text = (query.get("to") or day.isoformat()).strip()
    from_text = (query.get("from") or (day - timedelta(days=6)).isoformat()).strip()
    try:
        a = rp.parse_bound(from_text, tz)
        b = rp.parse_bound(to_text, tz, end=True)
    except ValueError:
        raise BadParams(f"dates are YYYY-MM-DD (or ISO times), in years 1 to 9999: {from_text!r}, "
                        f"{to_text!r}") from None
    if b <= a:
        raise BadParams("the end is before the start")
    if b - a > timedelta(days=MAX_DAYS):
        raise BadParams(f"at most {MAX_DAYS} days per report")
    return {"from": from_text, "to": to_text, "by": by, "tz": tz, "a": a, "b": b}


def build(dsn: str, p: dict, show, rules: str = "", in_effect=None) -> rp.Report:
    """The report on a connection of its own (run in a thread); caller IDs through show();
    by campaign, abandonment against each campaign's pack limit as `dialguard report` has it
    (its own packs, else `in_effect`, the rules version published, else `rules`, the node's)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3, application_name="dialguard-web-report") as conn:
        label = rp.caller_id_labeler(conn, show) if p["by"] == "caller_id" else None
        policy_of = rp.campaign_policies(conn, rules, in_effect) if p["by"] == "campaign" else None
        return rp.build(conn, p["by"], p["a"], p["b"], p["tz"], cid_label=label, policy_of=policy_of)


def heading(lang: str, col: str) -> str:
    key = f"col_{col}"
    try:
        return t(lang, key)
    except KeyError:
        return col  # denied_<reason>: the reason code itself (SPEC)


async def _report(request: web.Request, ident: users.Identity, p: dict) -> rp.Report:
    show = (lambda n: n) if authz.allowed(ident, "view_numbers") else mask
    engine = request.app[ENGINE]
    in_effect = None
    if p["by"] == "campaign":
        from dialguard.rules_store import RulesStore

        version = await RulesStore(engine.redis, engine.keys).current()
        in_effect = version.policy() if version else None
    return await asyncio.to_thread(build, engine.settings.pg_dsn, p, show, engine.settings.rules, in_effect)


def _query(p: dict, **extra) -> str:
    from urllib.parse import urlencode
    return urlencode({"from": p["from"], "to": p["to"], "by": p["by"], "tz": p["tz"], **extra})


# -- charts: horizontal bars in SVG ---------------------------------------------------

COLORS = {"allowed": "#3a8f4b", "denied": "#c0392b", "reason": "#c0392b", "abandon": "#d68910"}


def bars(cid: str, title: str, items: list[tuple[str, list[tuple[float, str]]]], unit: str = "",
         scale: float | None = None) -> str:
    """items: (label, [(value, color), ...]) stacked; each bar's total printed at its end."""
    if not items:
        return ""
    row, label_w, bar_w = 18, 170, 400
    top = max(scale or 0, max(sum(v for v, _ in segs) for _, segs in items)) or 1
    h = row * len(items) + 8
    out = [f'<figure id="{cid}"><figcaption>{_e(title)}</figcaption>'
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 80}" height="{h}" role="img" '
           f'aria-label="{_e(title)}" font-family="sans-serif" font-size="11">']
    for i, (label, segs) in enumerate(items):
        y = 4 + i * row
        out.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{_e(label[:28])}</text>')
        x = float(label_w)
        for v, color in segs:
            w = bar_w * v / top
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{color}">'
                           f'<title>{_e(label)}: {v:g}{unit}</title></rect>')
            x += w
        total = sum(v for v, _ in segs)
        out.append(f'<text x="{x + 4:.1f}" y="{y + 12}">{total:g}{unit}</text>')
    out.append("</svg></figure>")
    return "".join(out)


def charts(lang: str, rep: rp.Report) -> str:
    col = {c: i for i, c in enumerate(rep.columns)}
    more = lambda title, n: title + (f" ({t(lang, 'rep_chart_top', n=TOP)})" if n > TOP else "")  # noqa: E731
    if rep.by == "reason":
        items = [(r[0], [(r[col["denials"]], COLORS["reason"])]) for r in rep.rows]
        return bars("chart-reasons", t(lang, "rep_chart_reasons"), items)
    groups = sorted(rep.rows, key=lambda r: -r[col["attempts"]])
    attempts = [(str(r[0]), [(r[col["allowed"]], COLORS["allowed"]), (r[col["denied"]], COLORS["denied"])])
                for r in groups[:TOP] if r[col["attempts"]]]
    reasons = [(c[7:], [(rep.totals[i], COLORS["reason"])]) for c, i in col.items()
               if c.startswith("denied_") and rep.totals and rep.totals[i]]
    abandon = [(str(r[0]), [(r[col["abandon_rate"]], COLORS["abandon"])])
               for r in groups[:TOP] if r[col["abandon_rate"]] is not None]
    return (bars("chart-attempts", more(t(lang, "rep_chart_attempts"), len(groups)), attempts)
            + bars("chart-reasons", t(lang, "rep_chart_reasons"), reasons)
            + bars("chart-abandon", more(t(lang, "rep_chart_abandon"), len(groups)), abandon, unit="%",
                   scale=100))


def table(lang: str, rep: rp.Report) -> str:
    def cell(c, v):
        if v is None:
            return "—"
        return f"{v}%" if c.endswith("_rate") or c.startswith("share_") else str(v)

    th = "".join(f"<th>{_e(heading(lang, c))}</th>" for c in rep.columns)
    trs = "".join("<tr>" + "".join(f"<td>{_e(cell(c, v))}</td>" for c, v in zip(rep.columns, r)) + "</tr>"
                  for r in rep.rows)
    if rep.totals:
        trs += ('<tr class="total">' + "".join(f"<th>{_e(cell(c, v))}</th>" for c, v in zip(rep.columns, rep.totals))
                + "</tr>")
    return f'<div style="overflow-x:auto;font-size:.8rem"><table id="report" border="1" cellpadding="3">' \
           f'<tr>{th}</tr>{trs}</table></div>'


# -- handlers -------------------------------------------------------------------------

def _refused(request: web.Request, exc: Exception, status: int) -> web.Response:
    lang = request[LANGK]
    key = "forbidden" if status == 403 else "bad_input"
    return page(request, f'<h2>{t(lang, "reports")}</h2><p class="err" id="refused">'
                         f'{_e(t(lang, key, msg=str(exc)))}</p>', status)


def form(lang: str, p: dict) -> str:
    opts = "".join(f'<option value="{g}"{" selected" if g == p["by"] else ""}>{_e(heading(lang, g))}</option>'
                   for g in rp.GROUPS)
    return (f'<form class="box" method="get" action="/reports" id="report-form">'
            f'<label>{t(lang, "rep_from")} <input name="from" value="{_e(p["from"])}" size="10"></label> '
            f'<label>{t(lang, "rep_to")} <input name="to" value="{_e(p["to"])}" size="10"></label> '
            f'<label>{t(lang, "rep_by")} <select name="by">{opts}</select></label> '
            f'<label>{t(lang, "rep_tz")} <input name="tz" value="{_e(p["tz"])}" size="14"></label> '
            f'<button id="show">{t(lang, "rep_show")}</button></form>')


async def reports_page(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        authz.require(ident, "report_export")
    except authz.Forbidden as exc:
        return _refused(request, exc, 403)
    settings = request.app[ENGINE].settings
    try:
        p = params(request.query, settings.site_timezone, utcnow())
    except BadParams as exc:
        blank = {"from": request.query.get("from", ""), "to": request.query.get("to", ""),
                 "by": request.query.get("by", "campaign"), "tz": request.query.get("tz", settings.site_timezone)}
        return page(request, f'<h2>{t(lang, "reports")}</h2>{form(lang, blank)}<p class="err" id="refused">'
                             f'{_e(t(lang, "bad_input", msg=str(exc)))}</p>', 400)
    rep = await _report(request, ident, p)
    links = " · ".join(f'<a id="export-{f}" href="/reports/export.{f}?{_e(_query(p))}" download>'
                       f'{f.upper()}</a>' for f in FORMATS)
    body = (f'<h2>{t(lang, "reports")}</h2><p>{_e(t(lang, "rep_intro"))}</p>{form(lang, p)}'
            f'<p id="range">{_e(_range(lang, p))}</p>'
            f'<p id="exports">{t(lang, "rep_export")}: {links}</p>')
    if rep.rows:
        body += charts(lang, rep) + table(lang, rep)
    else:
        body += f'<p id="report">{t(lang, "rep_empty")}</p>'
    return page(request, body)


def _range(lang: str, p: dict) -> str:
    iso = lambda d: d.strftime("%Y-%m-%d %H:%M")  # noqa: E731
    return t(lang, "rep_range", start=p["from"], end=p["to"], tz=p["tz"], a=iso(p["a"]), b=iso(p["b"]))


async def export(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    fmt = request.match_info["fmt"]
    if fmt not in FORMATS:
        raise web.HTTPNotFound()
    try:
        authz.require(ident, "report_export")
    except authz.Forbidden as exc:
        return _refused(request, exc, 403)
    settings = request.app[ENGINE].settings
    try:
        p = params(request.query, settings.site_timezone, utcnow())
    except BadParams as exc:
        return _refused(request, exc, 400)
    rep = await _report(request, ident, p)
    if fmt == "csv":
        data = rp.to_csv(rep).encode("utf-8")
    elif fmt == "xlsx":
        buf = io.BytesIO()
        rp.to_xlsx(rep, buf)
        data = buf.getvalue()
    else:
        from dialguard.audit.report_pdf import FontMissing, to_pdf

        masked = t(lang, "rep_unmasked" if authz.allowed(ident, "view_numbers") else "rep_masked")
        meta = [_range(lang, p), t(lang, "rep_generated", at=utcnow().isoformat(timespec="seconds"),
                                   who=authz.actor_of(ident), masked=masked), t(lang, "rep_intro")]
        try:
            data = await asyncio.to_thread(to_pdf, rep, t(lang, "rep_title", by=heading(lang, p["by"])),
                                           lambda c: heading(lang, c), meta)
        except FontMissing as exc:
            log.error("report PDF: %s", exc)
            return _refused(request, exc, 503)
    zone = ZoneInfo(p["tz"])
    first, last = p["a"].astimezone(zone), (p["b"] - timedelta(seconds=1)).astimezone(zone)
    name = f"dialguard-report-{p['by']}-{first:%Y%m%d}-{last:%Y%m%d}.{fmt}"
    log.info("report %s by %s exported as %s by %s", p["by"], p["from"] + ".." + p["to"], fmt,
             authz.actor_of(ident))
    return web.Response(body=data, headers={"Content-Type": FORMATS[fmt],
                                            "Content-Disposition": f'attachment; filename="{name}"'})


def setup(app: web.Application) -> None:
    app.router.add_get("/reports", reports_page)
    app.router.add_get("/reports/export.{fmt}", export)
