"""The CLI as an authenticated user: admin writes through the API with a token (issue 15).

With DIALGUARD_TOKEN set (a `dialguard user token`), `dialguard pause|resume`
send the change to `dialguard web` (DIALGUARD_WEB_URL, default the local
console) instead of writing the store: the server checks the token's role
(dialguard/authz.py) and the audit names the token's user, never a typed
name. Without a token the CLI writes the store directly (local access on a
guard host), as before.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from dialguard.config import _env


class RemoteError(Exception):
    def __init__(self, msg: str, status: int):
        super().__init__(msg)
        self.status = status


def token() -> str | None:
    return os.environ.get("DIALGUARD_TOKEN") or None


def base_url() -> str:
    port = _env("DIALGUARD_WEB_PORT", "19102")
    return _env("DIALGUARD_WEB_URL", f"http://127.0.0.1:{port}").rstrip("/")


def call(method: str, path: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    """One API call with the token; RemoteError (status 0: unreachable) on any failure."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url() + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token()}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            msg = exc.reason
        raise RemoteError(f"{base_url()}: {exc.code} {msg}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"{base_url()} unreachable: {exc} (set DIALGUARD_WEB_URL)", 0) from None


def killswitch(action: str, scope: str, name: str | None, why: str = "") -> dict:
    if scope not in ("all", "campaign"):
        raise RemoteError("through the API the kill switch takes all or --campaign (caller IDs: local access)", 2)
    body = {"action": action, "scope": scope, "why": why}
    if name:
        body["name"] = name
    return call("POST", "/api/v1/killswitch", body)
