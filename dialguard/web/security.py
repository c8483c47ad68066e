"""Pure pieces of the console's security: login rate limits, number masking, settings."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from dialguard.config import _env


@dataclass(frozen=True)
class WebSettings:
    host: str = field(default_factory=lambda: _env("DIALGUARD_WEB_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("DIALGUARD_WEB_PORT", "19102")))
    # Set when a TLS reverse proxy fronts the console (docs/WEB.md): cookies get Secure.
    tls: bool = field(default_factory=lambda: _env("DIALGUARD_WEB_TLS", "0") == "1")
    # Proxies whose X-Forwarded-For names the real client (for the per-source login limit).
    trusted_proxies: tuple[str, ...] = field(default_factory=lambda: tuple(
        p.strip() for p in _env("DIALGUARD_WEB_TRUSTED_PROXIES", "").split(",") if p.strip()))
    session_hours: float = field(default_factory=lambda: float(_env("DIALGUARD_WEB_SESSION_HOURS", "8")))


class LoginLimiter:
    """Failed logins per user name and per source in a sliding window.

    A login is refused without checking the password once the user has
    `per_user` failures, or the source `per_source`, within `window_s`
    (so a guesser cannot go on; argon2 also makes each guess slow). Kept in
    the process: the console is one service. `now` is a monotonic time in seconds.
    """

    def __init__(self, per_user: int = 5, per_source: int = 20, window_s: float = 900.0):
        self.per_user, self.per_source, self.window_s = per_user, per_source, window_s
        self._fails: dict[str, deque] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque:
        q = self._fails[key]
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
            return deque()
        return q

    def retry_after(self, user: str, source: str, now: float) -> float:
        """Seconds until a login for (user, source) may be tried again; 0: now."""
        wait = 0.0
        for key, cap in (("u:" + user, self.per_user), ("s:" + source, self.per_source)):
            q = self._recent(key, now)
            if len(q) >= cap:
                wait = max(wait, q[len(q) - cap] + self.window_s - now)
        return wait

    def failed(self, user: str, source: str, now: float) -> None:
        for key in ("u:" + user, "s:" + source):
            self._fails[key].append(now)
            if len(self._fails) > 100_000:  # bounded memory under a spray of names
                self._fails.pop(next(iter(self._fails)))

    def succeeded(self, user: str) -> None:
        self._fails.pop("u:" + user, None)


def mask(e164: str | None) -> str:
    """A number as a viewer sees it: country code and prefix, last 2 digits (+86138*******78)."""
    if not e164:
        return ""
    keep_head = min(6, max(len(e164) - 4, 1))
    return e164[:keep_head] + "*" * (len(e164) - keep_head - 2) + e164[-2:]
