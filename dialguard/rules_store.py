"""Versioned rules in Redis: `dialguard rules apply|activate|diff|history`.

A rules version is a self-contained bundle: the YAML text of every pack it
combines, so every node evaluates exactly the same rules whatever files it has.
Versions are numbered 1, 2, ... and never change once stored. One version is
*active* (enforced); optionally another is *shadow* (evaluated beside the
active one on every decision, never enforced, its verdict audited).

Taking effect atomically everywhere: rules.lua switches the version and writes
the audit record in one step, and decide.lua compares the version a node
evaluated with the one in effect; a node with a stale copy reloads and decides
again (dialguard/engine.py), so no decision after the switch uses the old rules.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from dialguard.decision import scripts
from dialguard.ids import actor, new_id  # noqa: F401 - rules_store.actor for its users
from dialguard.decision.keys import Keys
from dialguard.decision.rules_choice import CampaignRules, campaign_rules
from dialguard.rules import Policy, RulesError, pack_source


@dataclass(frozen=True)
class RulesVersion:
    version: int
    hash: str
    name: str
    spec: str
    files: tuple[tuple[str, str], ...]  # (origin, YAML text)
    actor: str = ""
    why: str = ""
    at: int = 0  # ms

    @classmethod
    def from_json(cls, text: str | bytes, meta: str | bytes | None = None) -> "RulesVersion":
        d = json.loads(text)
        if meta:
            d.update(json.loads(meta))
        return cls(version=int(d["version"]), hash=d["hash"], name=d["name"], spec=d["spec"],
                   files=tuple((f["ref"], f["text"]) for f in d["files"]), actor=d.get("actor", ""),
                   why=d.get("why", ""), at=int(d.get("at") or 0))

    def policy(self) -> Policy:
        return Policy.from_sources([(f"rules version {self.version} ({ref})", text) for ref, text in self.files])


def bundle(spec: str, base_dir: Path | None = None) -> tuple[Policy, dict]:
    """Resolve packs or files into a bundle (validated: an invalid file never
    becomes a version)."""
    refs = [r.strip() for r in spec.split(",") if r.strip()]
    if not refs:
        raise RulesError("no rule pack given")
    return bundle_sources([pack_source(r, base_dir) for r in refs])


def bundle_sources(sources: list[tuple[str, str]]) -> tuple[Policy, dict]:
    """A bundle of (origin, YAML text) already read (the console's uploads), validated."""
    if not sources:
        raise RulesError("no rule pack given")
    policy = Policy.from_sources(sources)
    return policy, {"hash": policy.version_hash, "name": policy.name, "spec": ",".join(r for r, _ in sources),
                    "files": [{"ref": ref, "text": text} for ref, text in sources]}


def canonical(policy: Policy) -> str:
    """The rules as the engine reads them, one pack after the other: what `diff` compares
    (comments and key order in the files don't matter, values do)."""
    docs = [p.model_dump(mode="json", exclude_none=True) for p in policy.packs]
    return yaml.safe_dump_all(docs, sort_keys=True, allow_unicode=True, width=100)


def diff(old: Policy | None, new: Policy, old_name: str, new_name: str) -> str:
    a = canonical(old).splitlines(keepends=True) if old else []
    b = canonical(new).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_name, tofile=new_name))


class RulesStore:
    def __init__(self, redis, keys: Keys, node: str = ""):
        self.redis = redis
        self.keys = keys
        self.node = node

    def _tail(self, why: str, who: str | None) -> str:
        return json.dumps({"actor": who or actor(), "why": why, "at": int(time.time() * 1000), "node": self.node},
                          separators=(",", ":"), ensure_ascii=False)

    async def apply(self, spec: str, *, shadow: bool = False, why: str = "", who: str | None = None,
                    base_dir: Path | None = None) -> tuple[int, bool]:
        """Store the packs as a new version and put it in effect. Returns (version, new):
        applying content identical to the version already in that role changes nothing."""
        return await self.apply_bundle(bundle(spec, base_dir)[1], shadow=shadow, why=why, who=who)

    async def apply_bundle(self, b: dict, *, shadow: bool = False, why: str = "",
                           who: str | None = None) -> tuple[int, bool]:
        """apply() for a bundle already built (and validated) by `bundle`."""
        mode = "shadow" if shadow else "active"
        current = await self.current(mode)
        if current and current.hash == b["hash"]:
            return current.version, False
        body = json.dumps(b, separators=(",", ":"), ensure_ascii=False)
        n = await scripts.RULES(self.redis, [self.keys.rules, self.keys.audit],
                                ["apply", mode, body, new_id(), self._tail(why, who)])
        return int(n), True

    async def activate(self, version: int, *, shadow: bool = False, why: str = "", who: str | None = None) -> int:
        """Put a stored version back in effect (roll back or forward)."""
        return int(await scripts.RULES(self.redis, [self.keys.rules, self.keys.audit],
                                       ["activate", "shadow" if shadow else "active", str(int(version)),
                                        new_id(), self._tail(why, who)]))

    async def shadow_off(self, *, why: str = "", who: str | None = None) -> bool:
        old = await self.redis.hget(self.keys.rules, "shadow")
        await scripts.RULES(self.redis, [self.keys.rules, self.keys.audit],
                            ["shadow_off", "shadow", "", new_id(), self._tail(why, who)])
        return old is not None

    async def in_effect(self) -> tuple[int | None, int | None]:
        a, s = await self.redis.hmget(self.keys.rules, "active", "shadow")
        return (int(a) if a else None, int(s) if s else None)

    async def get(self, version: int) -> RulesVersion | None:
        raw, meta = await self.redis.hmget(self.keys.rules, f"v:{int(version)}", f"m:{int(version)}")
        return RulesVersion.from_json(raw, meta) if raw else None

    async def current(self, mode: str = "active") -> RulesVersion | None:
        v = await self.redis.hget(self.keys.rules, mode)
        return await self.get(int(v)) if v else None

    async def campaign_rules(self, campaign: str, node: Policy | str, own: str | None = None) -> CampaignRules:
        """The rules a campaign's calls are decided by as this store holds them
        (rules_choice.campaign_rules): `own` packs when the caller knows them (the dialer's
        record of the campaign), else its record's here; else the version in effect; else
        `node`. A version stored here that cannot be loaded counts as none (a report's or a
        check's reading; the engine denies such calls instead)."""
        if not own:
            raw = await self.redis.hget(self.keys.campaign(campaign), "rules")
            own = raw.decode() if raw else None
        if own:  # its own packs decide, whatever version is in effect: not read
            return campaign_rules(own, None, node)
        try:
            version = await self.current()
            in_effect = version.policy() if version else None
        except (RulesError, ValueError, KeyError):
            in_effect = None
        return campaign_rules(own, in_effect, node)

    async def history(self) -> list[RulesVersion]:
        seq = await self.redis.hget(self.keys.rules, "seq")
        out = []
        for n in range(1, int(seq or 0) + 1):
            v = await self.get(n)
            if v:
                out.append(v)
        return out

