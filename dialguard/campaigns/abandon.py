"""The abandon limits a campaign dials under, and what pacing may do about them
(pure, unit-tested; docs/DIALER.md "Abandonment").

Limits come from the campaign's rule packs (`abandon_rate`: us-tcpa 3 % of calls
answered by a live person per campaign over 30 days, 47 CFR 64.1200(a)(7);
uk-ofcom 3 % of live calls over 24 hours, Ofcom persistent-misuse policy Annex 1)
and from the campaign's own `abandon_limit_pct` over the site's local day. Each is
measured on the dialer's call records in PostgreSQL (so a restart forgets nothing):
abandoned calls / calls answered by a live person (machines and voicemail are not
in the base) in the limit's window.

Pacing per campaign, by the tightest limit:
- open: the dial ratio, slowed as the rate nears the limit (pacing.effective_ratio);
- progressive: one more abandoned call would cross a limit (the headroom is
  used up, as at a campaign's start, with no answered call yet): one call per
  free agent and no more, so that every answer finds an agent;
- stopped: a limit is crossed (an abandoned call in progressive pacing, e.g. an
  agent taken by another campaign meanwhile): nothing is originated until the rate
  is back within it (older calls leave the window, or the admin changes the
  campaign's own limit). `Verdict.callable_at` says when that is if nothing more is
  dialed (a pack's: one period after the answer of the oldest call that must leave;
  the campaign's own: the next local day). There is deliberately no override: a pack's
  limit is the law's, and dialing while over it is what the limit forbids.
A limit of 100 % or more limits nothing (a campaign's own limit set that high).
Moved here from ari_app/ (the dialer, `campaign status` and `dialguard report` read it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

OPEN, PROGRESSIVE, STOPPED = "open", "progressive", "stopped"



@dataclass(frozen=True)
class Limit:
    source: str  # the pack's name, or "campaign" for the campaign's own daily limit
    max_pct: float
    period: timedelta | None  # None: the site's local day
    answered: int = 0  # calls answered by a live person in the window
    abandoned: int = 0
    # crossed: when the rate is back within the limit if nothing more is dialed (older
    # calls leave the window; the campaign's own daily limit: the next local day)
    callable_at: datetime | None = None

    @property
    def rate_pct(self) -> float:
        return 100.0 * self.abandoned / self.answered if self.answered else 0.0

    @property
    def headroom(self) -> int:
        """Abandoned calls still allowed before the rate would exceed the limit."""
        return math.floor(self.max_pct * self.answered / 100.0 + 1e-9) - self.abandoned

    @property
    def crossed(self) -> bool:
        return self.abandoned > 0 and self.rate_pct > self.max_pct + 1e-9

    @property
    def frac(self) -> float:
        if self.max_pct <= 0:
            return math.inf if self.abandoned else 1.0
        return self.rate_pct / self.max_pct

    @property
    def window(self) -> str:
        return "today" if self.period is None else f"over {fmt_period(self.period)}"

    def describe(self) -> str:
        return (f"{self.source}: {self.rate_pct:.2f}% of {self.max_pct:g}% {self.window} "
                f"({self.abandoned} abandoned / {self.answered} answered)")


@dataclass(frozen=True)
class Verdict:
    state: str  # open, progressive, stopped
    tightest: Limit | None  # the limit nearest to (or furthest over) its maximum

    @property
    def why(self) -> str:
        if self.tightest is None:
            return "no abandon limit"
        return self.tightest.describe()

    @property
    def callable_at(self) -> datetime | None:
        """Stopped: when every crossed limit is back within its maximum (nothing more dialed)."""
        if self.state != STOPPED or self.tightest is None:
            return None
        return self.tightest.callable_at

    def summary(self) -> str:
        """One line for `campaign status` and the dialer's log, e.g. "stopped: us-tcpa
        abandon limit 3% over 30 days, 3.40% now (4 abandoned / 118 answered), callable
        again at 2026-12-30T10:00:00+00:00"."""
        t = self.tightest
        if t is None:
            return f"{self.state}: no abandon limit"
        who = "own abandon limit" if t.source == "campaign" else f"{t.source} abandon limit"
        line = (f"{self.state}: {who} {t.max_pct:g}% {t.window}, {t.rate_pct:.2f}% now "
                f"({t.abandoned} abandoned / {t.answered} answered)")
        if self.state == STOPPED:
            at = self.callable_at
            line += (f", callable again at {at.isoformat()}" if at
                     else ", callable again once the rate is back within the limit")
        elif self.state == PROGRESSIVE:
            line += ", one call per free agent"
        return line


def assess(limits: list[Limit]) -> Verdict:
    """What the limits allow: stopped when one is crossed, progressive when one more
    abandoned call would cross one, else open. A limit of 100 % or more limits nothing."""
    limits = [x for x in limits if x.max_pct < 100]
    if not limits:
        return Verdict(OPEN, None)
    tight = max(limits, key=lambda x: (x.crossed, x.headroom <= 0, x.frac))
    crossed = [x for x in limits if x.crossed]
    if crossed:
        # callable again once the last crossed limit clears: name that one
        ats = [x.callable_at for x in crossed]
        if len(crossed) > 1 and all(ats):
            tight = max(crossed, key=lambda x: x.callable_at)
        return Verdict(STOPPED, tight)
    if any(x.headroom <= 0 for x in limits):
        return Verdict(PROGRESSIVE, tight)
    return Verdict(OPEN, tight)


def fmt_period(p: timedelta) -> str:
    s = int(p.total_seconds())
    if s % 86400 == 0:
        return f"{s // 86400} days" if s != 86400 else "24 h"
    if s % 3600 == 0:
        return f"{s // 3600} h"
    return f"{s} s"


async def campaign_limits(store, policy, camp, now, site_timezone: str) -> list[Limit]:
    """The campaign's limits, measured now on its call records: its packs' (each over
    its own rolling period) and its own `abandon_limit_pct` over the local day."""
    from dialguard.campaigns.store import local_day

    out = []
    for pack, rp in (policy.abandon_limits if policy is not None else []):
        answered, abandoned = await store.live_abandon_stats(camp.name, now - rp.period, now)
        x = Limit(pack, rp.max_pct, rp.period, answered, abandoned)
        if x.crossed and x.max_pct < 100:
            oldest = await store.abandon_clears_at(camp.name, now - rp.period, now, rp.max_pct)
            x = Limit(pack, rp.max_pct, rp.period, answered, abandoned, oldest + rp.period if oldest else None)
        out.append(x)
    day = local_day(now, site_timezone)
    answered, abandoned = await store.abandon_stats(camp.name, *day)
    x = Limit("campaign", camp.abandon_limit_pct, None, answered, abandoned)
    out.append(Limit("campaign", camp.abandon_limit_pct, None, answered, abandoned, day[1]) if x.crossed else x)
    return out
