"""The console's DNC lists: entries per list (Redis fingerprints and PostgreSQL at
rest) and a CSV upload imported by the same code path as `dialguard dnc import`
(dialguard/dnc.py import_csv: normalized, hashed and sealed in workers, stored in
Redis and dnc_entries, idempotent), with its progress on a page that reloads
itself (a `Refresh` header, no script).

The upload stays in memory, never on disk: no plaintext number at rest. Rows that
are not phone numbers are rejected with their line and why, all of them listed on
the result page; every valid row is stored. Importing is `dnc_edit` (supervisor
or above); the import is audited (an admin record `dnc_import`) as the signed-in
user, whether it completes or stops midway (`status` complete or failed, with the
rows stored so far: what was written stays, and the job's page says to upload
again). Jobs live in the service's memory: a restart loses the progress page, not
the entries (re-uploading the same file adds nothing twice).
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from dialguard import authz
from dialguard.admin import admin_redis
from dialguard.admin_actions import ActionError, campaign_list
from dialguard.dnc import (GLOBAL_LIST, DncDb, DncDbUnavailable, DncFileError, DncStore, ImportReport, check_file,
                           import_csv, read_numbers, redis_list)
from dialguard.web.i18n import t
from dialguard.web.security import mask
from dialguard.web.ui import ENGINE, LANGK, POOL, _e, _signed_in, csrf_field, page, redirect

log = logging.getLogger("dialguard.web")
JOBS = web.AppKey("dnc_jobs", dict)
TASKS = web.AppKey("dnc_tasks", set)
KEEP_S = 3600  # a finished job's page (and its rejected rows, in memory) is kept this long
MAX_UPLOAD = 3 * 1024 * 1024  # under the service's 4 MiB request limit (docs/WEB.md: larger lists: the CLI)
SHOWN_REJECTS = 2000
CHUNK = 5_000  # rows per batch: the progress granularity


@dataclass
class Job:
    id: str
    user: str
    list: str
    source: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    report: ImportReport | None = None  # set when the import completed
    stored: int = 0  # rows stored in both sinks (whole chunks), also when it stopped midway
    error: str = ""
    rejects: list = field(default_factory=list)
    finished: float = 0.0


async def lists_page(request: web.Request, msg: str = "", status: int = 200) -> web.Response:
    _signed_in(request)
    lang = request[LANGK]
    e = request.app[ENGINE]
    async with request.app[POOL].connection() as conn:
        rows = await (await conn.execute(  # the list at rest: single entries and imported blocks
            "select list, sum(n)::bigint from (select list, count(*) as n from dnc_entries group by list "
            "union all select list, sum(entries) from dnc_blocks group by list) x group by list order by list"
        )).fetchall()
    names = dict(rows)
    names.setdefault(GLOBAL_LIST, 0)
    store = DncStore(e.redis, e.keys)
    trs = []
    for name in sorted(names, key=lambda n: (n != GLOBAL_LIST, n)):
        fp = await store.count(redis_list(name))
        trs.append(f'<tr class="dnc-list"><td>{_e(t(lang, "dnc_global") if name == GLOBAL_LIST else name)}</td>'
                   f'<td>{fp:,}</td><td>{names[name]:,}</td></tr>')
    table = (f'<table id="dnc-lists" border="1" cellpadding="3"><tr><th>{t(lang, "dnc_list")}</th>'
             f'<th>{t(lang, "dnc_in_redis")}</th><th>{t(lang, "dnc_at_rest")}</th></tr>{"".join(trs)}</table>')
    form = (f'<h3>{t(lang, "dnc_upload")}</h3><p>{_e(t(lang, "dnc_upload_help", mb=MAX_UPLOAD // (1024 * 1024)))}</p>'
            f'<form class="box" method="post" action="/dnc/import" enctype="multipart/form-data" id="dnc-form">'
            f'{csrf_field(request)}<label>{t(lang, "dnc_file")} <input type="file" name="file" accept=".csv,.txt" '
            f'required></label> <label>{t(lang, "campaign")} <input name="campaign" '
            f'placeholder="{_e(t(lang, "dnc_global"))}"></label> <label>{t(lang, "reason")} <input name="why">'
            f'</label> <button id="dnc-import">{t(lang, "dnc_import")}</button></form>')
    return page(request, f'{msg}<h2>{t(lang, "dnc")}</h2>{table}{form}', status)


async def upload(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    try:
        authz.require(ident, "dnc_edit")
    except authz.Forbidden as exc:
        log.warning("refused dnc_edit to %s (%s)", ident.user, ident.role)
        return await lists_page(request, f'<p class="err" id="refused">{_e(t(lang, "forbidden", msg=str(exc)))}</p>',
                                403)
    form = await request.post()
    up = form.get("file")
    name = getattr(up, "filename", "") or ""
    err = lambda m: lists_page(request, f'<p class="err" id="error">{_e(t(lang, "bad_input", msg=m))}</p>', 400)  # noqa: E731
    if not name:
        return await err(t(lang, "dnc_no_file"))
    raw = up.file.read(MAX_UPLOAD + 1)
    if len(raw) > MAX_UPLOAD:
        return await err(t(lang, "dnc_too_large", mb=MAX_UPLOAD // (1024 * 1024)))
    campaign = str(form.get("campaign", "")).strip() or None
    if campaign and (len(campaign) > 64 or any(c.isspace() for c in campaign)):
        return await err("campaign: at most 64 characters, no spaces")
    try:
        lst = campaign_list(campaign)  # the same list in Redis and at rest: `global` is not a campaign
    except ActionError as exc:
        return await err(str(exc))
    why = str(form.get("why", "")).strip()[:500]
    # as read_numbers reads a file: undecodable bytes become U+FFFD, so the row is rejected, not the file
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    region = request.app[ENGINE].default_region
    try:
        check_file(io.StringIO(text, newline=""), region)
    except DncFileError as exc:  # its first row is neither a header nor a number: refused whole
        return await err(str(exc))
    # the data rows as the import counts them (no header; a quoted field may span lines)
    total = await asyncio.to_thread(lambda: sum(1 for _ in read_numbers(io.StringIO(text, newline=""), region)))
    job = Job(secrets.token_urlsafe(12), ident.user, lst, name[:120], total)
    jobs = request.app[JOBS]
    for old in [j for j in jobs.values() if j.finished and time.monotonic() - j.finished > KEEP_S]:
        del jobs[old.id]
    jobs[job.id] = job
    task = asyncio.create_task(_run(request.app, job, text, campaign, why, authz.actor_of(ident)))
    request.app[TASKS].add(task)  # a reference, so the task is not collected while it runs
    task.add_done_callback(request.app[TASKS].discard)
    log.info("dnc import %s of %s (%d rows) into %s by %s", job.id, job.source, total, job.list,
             authz.actor_of(ident))
    return redirect(f"/dnc/import/{job.id}")


async def _run(app: web.Application, job: Job, text: str, campaign: str | None, why: str, actor: str) -> None:
    e = app[ENGINE]
    s = e.settings
    db = None
    # the import's pipelines on a client of their own that waits as the CLI's does: the
    # console engine's 200 ms (the call path's deadline) could fail a large import midway
    redis = admin_redis(s)
    rep = ImportReport()  # filled chunk by chunk: what was stored before a failure, too
    error = ""
    try:
        db = await DncDb.open(s.pg_dsn)
        store = DncStore(redis, e.keys)

        def progress(n: int) -> None:
            job.done = n

        await import_csv(store, store.list_name(campaign), io.StringIO(text, newline=""), e.default_region,
                         s.hash_secret, chunk_rows=CHUNK, workers=1, progress=progress, db=db,
                         db_name=job.list, source=f"web:{job.source}", rejects_sink=job.rejects, report=rep)
    except (DncDbUnavailable, DncFileError) as exc:  # shown, not logged: a file's error may quote its first row
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - shown on the job's page, logged; the service goes on
        log.exception("dnc import %s failed after %d of %d rows", job.id, rep.rows, job.total)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await redis.aclose()
        if db is not None:
            await db.close()
    complete = not error
    try:
        async with e.redis.pipeline(transaction=True) as pipe:
            # who made the change, with its figures; a failed import too: what it wrote stays (idempotent)
            e._admin(pipe, "dnc_import", job.list, why, actor=actor, source=job.source,
                     status="complete" if complete else "failed", total=job.total, rows=rep.rows, added=rep.added,
                     stored=rep.stored, duplicates=rep.duplicates, rejected=rep.rejected,
                     **({"error": error[:500]} if error else {}))
            await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - said on the job's page, logged
        log.exception("dnc import %s: its audit record was not written", job.id)
        error = (error + "; " if error else "") + f"the import's audit record was not written: {exc}"
    # the job's page changes once everything is done, the audit record included
    job.stored, job.report, job.error = rep.rows, rep if complete else None, error
    job.finished = time.monotonic()


def _summary(lang: str, r: ImportReport) -> str:
    return t(lang, "dnc_done", rows=r.rows, added=r.added, dup=r.duplicates, rejected=r.rejected, stored=r.stored)


async def job_page(request: web.Request) -> web.Response:
    ident = _signed_in(request)
    lang = request[LANGK]
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None or (job.user != ident.user and not authz.allowed(ident, "dnc_remove")):
        raise web.HTTPNotFound(text=t(lang, "dnc_no_job"))
    show = (lambda n: n) if authz.allowed(ident, "view_numbers") else mask
    head = f'<h2>{t(lang, "dnc")}</h2><p>{_e(t(lang, "dnc_job", source=job.source, list=job.list))}</p>'
    if job.error:
        after = (f'<p class="err" id="partial">{_e(t(lang, "dnc_failed", done=job.stored, total=job.total))}</p>'
                 if job.report is None else f'<p class="msg" id="done">{_e(_summary(lang, job.report))}</p>')
        return page(request, head + f'<p class="err" id="error">{_e(job.error)}</p>{after}'
                                    f'<p><a href="/dnc">{t(lang, "dnc")}</a></p>', 200)
    if job.report is None:
        pct = int(100 * job.done / job.total) if job.total else 0
        resp = page(request, head + f'<p id="progress"><progress max="{job.total}" value="{job.done}"></progress> '
                                    f'{_e(t(lang, "dnc_progress", done=job.done, total=job.total, pct=pct))}</p>')
        resp.headers["Refresh"] = "1"
        return resp
    summary = _summary(lang, job.report)
    rej = ""
    if job.rejects:
        shown = job.rejects[:SHOWN_REJECTS]
        rej = (f'<h3>{t(lang, "dnc_rejected", n=len(job.rejects), shown=len(shown))}</h3>'
               f'<table id="rejects" border="1" cellpadding="3"><tr><th>{t(lang, "dnc_line")}</th>'
               f'<th>{t(lang, "dnc_value")}</th><th>{t(lang, "why")}</th></tr>'
               + "".join(f"<tr><td>{ln}</td><td>{_e(show(v) if v.startswith('+') else v)}</td><td>{_e(w)}</td></tr>"
                         for ln, v, w in shown) + "</table>")
    return page(request, head + f'<p class="msg" id="done">{_e(summary)}</p>{rej}'
                                f'<p><a href="/dnc">{t(lang, "dnc")}</a></p>')


def setup(app: web.Application) -> None:
    app[JOBS] = {}
    app[TASKS] = set()
    app.router.add_get("/dnc", lists_page)
    app.router.add_post("/dnc/import", upload)
    app.router.add_get("/dnc/import/{id}", job_page)
