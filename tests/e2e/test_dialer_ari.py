"""The dialer's ARI client against the stack's real Asterisk."""

from __future__ import annotations

import uuid

import pytest

from ari_app.client import AriClient, AriError


async def test_real_ari_rest_events_and_auth(stack, asterisk):
    app = f"dg-ari-{uuid.uuid4().hex[:6]}"
    c = AriClient(stack.ari_url, stack.ari_user, stack.ari_password, app, pool_size=4)
    c.start()
    try:
        assert await c.wait_healthy(10)
        info = await c.get("asterisk/info")
        assert "system" in info
        apps = {a["name"] for a in await c.get("applications")}
        assert app in apps  # the events socket registered the Stasis app
        with pytest.raises(AriError) as exc:
            await c.get("channels/no-such-channel")
        assert exc.value.status == 404
    finally:
        await c.close()

    bad = AriClient(stack.ari_url, stack.ari_user, stack.ari_password + "x", app)
    try:
        with pytest.raises(AriError) as exc:
            await bad.get("asterisk/info")
        assert exc.value.status == 401
        bad.start()
        assert not await bad.wait_healthy(1.0)  # the socket upgrade is refused too
    finally:
        await bad.close()
