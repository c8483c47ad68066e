"""Rules and calendar publication by an authenticated compliance user (issue 15, point 4).

The API (dialguard/web/publish.py) and the CLI with DIALGUARD_TOKEN (through
that API) publish here: dialguard.authz first (rules_apply, calendar_publish:
compliance or above), then the same stores the CLI uses in break-glass
(RulesStore, CalendarStore), with the authenticated identity as the audit
record's actor. A rules version is sent as its files' texts (the bundle the
CLI reads with `rules_store.bundle`), validated here again: an invalid file
never becomes a version.
"""

from __future__ import annotations

from dialguard import authz
from dialguard.users import Identity

MAX_FILES, MAX_TEXT = 20, 512 * 1024


class PublishError(ValueError):
    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def _require(ident: Identity, action: str) -> None:
    try:
        authz.require(ident, action)
    except authz.Forbidden as exc:
        raise PublishError(str(exc), 403) from None


def _why(why) -> str:
    if not isinstance(why, str) or len(why) > 1000:
        raise PublishError("why: text, at most 1000 characters")
    return why


def _rules_store(engine):
    from dialguard.rules_store import RulesStore
    return RulesStore(engine.redis, engine.keys, engine.settings.node)


def _calendar_store(engine):
    from dialguard.calendars import CalendarStore
    return CalendarStore(engine.redis, engine.keys, engine.settings.node)


def rules_bundle(files) -> dict:
    """The bundle of `rules_store.bundle` from [{"ref", "text"}], validated."""
    from dialguard.rules import Policy, RulesError

    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise PublishError(f"files: 1 to {MAX_FILES} objects with ref and text")
    sources = []
    for i, f in enumerate(files):
        if not (isinstance(f, dict) and isinstance(f.get("ref"), str) and isinstance(f.get("text"), str)
                and f["ref"] and len(f["text"]) <= MAX_TEXT):
            raise PublishError(f"files[{i}]: an object with ref and text (at most {MAX_TEXT} characters)")
        sources.append((f["ref"], f["text"]))
    try:
        policy = Policy.from_sources(sources)
    except RulesError as exc:
        raise PublishError(f"rules: {exc}; nothing published") from None
    return {"hash": policy.version_hash, "name": policy.name, "spec": ",".join(r for r, _ in sources),
            "files": [{"ref": r, "text": t} for r, t in sources]}


async def rules_apply(engine, ident: Identity, files, *, shadow: bool = False, why: str = "") -> dict:
    _require(ident, "rules_apply")
    b = rules_bundle(files)
    n, changed = await _rules_store(engine).apply_bundle(b, shadow=bool(shadow), why=_why(why),
                                                         who=authz.actor_of(ident))
    return {"version": n, "role": "shadow" if shadow else "active", "changed": changed, "hash": b["hash"],
            "by": authz.actor_of(ident)}


async def rules_activate(engine, ident: Identity, version, *, shadow: bool = False, why: str = "") -> dict:
    from redis.exceptions import ResponseError

    _require(ident, "rules_apply")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PublishError("version: a stored version number")
    try:
        n = await _rules_store(engine).activate(version, shadow=bool(shadow), why=_why(why),
                                                who=authz.actor_of(ident))
    except ResponseError as exc:
        raise PublishError(str(exc), 404) from None
    return {"version": n, "role": "shadow" if shadow else "active", "by": authz.actor_of(ident)}


async def rules_shadow_off(engine, ident: Identity, *, why: str = "") -> dict:
    _require(ident, "rules_apply")
    had = await _rules_store(engine).shadow_off(why=_why(why), who=authz.actor_of(ident))
    return {"shadow_off": had, "by": authz.actor_of(ident)}


async def calendar_import(engine, ident: Identity, code, text, *, why: str = "") -> dict:
    from dialguard.calendar_file import CalendarFileError
    from dialguard.calendars import read_file

    _require(ident, "calendar_publish")
    if not isinstance(code, str) or not isinstance(text, str) or len(text) > MAX_TEXT:
        raise PublishError("code and text: the calendar and the file's text")
    try:
        cf = read_file(text, code)
    except (CalendarFileError, ValueError) as exc:
        raise PublishError(f"calendar: {exc}; nothing published") from None
    n, new = await _calendar_store(engine).import_file(cf, why=_why(why), who=authz.actor_of(ident))
    return {"version": n, "published": new, "calendar": cf.calendar, "year": cf.year, "by": authz.actor_of(ident)}


async def calendar_activate(engine, ident: Identity, version, *, why: str = "") -> dict:
    from redis.exceptions import ResponseError

    _require(ident, "calendar_publish")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PublishError("version: a stored version number")
    try:
        n = await _calendar_store(engine).activate(version, why=_why(why), who=authz.actor_of(ident))
    except ResponseError as exc:
        raise PublishError(str(exc), 404) from None
    return {"version": n, "by": authz.actor_of(ident)}
