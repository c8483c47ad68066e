"""Pure pieces of the console: login limiter, masking, the authorization table, passwords, tokens."""

from __future__ import annotations

import pytest

from dialguard import authz, users
from dialguard.users import Identity
from dialguard.web.security import LoginLimiter, mask


def test_limiter_counts_failures_per_user_and_per_source_in_a_sliding_window():
    lim = LoginLimiter(per_user=3, per_source=5, window_s=100)
    for t in (0, 10, 20):
        assert lim.retry_after("alice", "10.0.0.1", t) == 0
        lim.failed("alice", "10.0.0.1", t)
    assert lim.retry_after("alice", "10.0.0.9", 30) == pytest.approx(70)  # per user, whatever the source
    assert lim.retry_after("bob", "10.0.0.1", 30) == 0
    assert lim.retry_after("alice", "10.0.0.1", 100.5) == 0  # the first failure left the window
    lim.failed("bob", "10.0.0.1", 40)
    lim.failed("carol", "10.0.0.1", 41)
    assert lim.retry_after("dave", "10.0.0.1", 50) == 0  # four in the window (the one at 0 left)
    lim.failed("erin", "10.0.0.1", 42)  # five failures from one source, four names: the oldest (10) + 100
    assert lim.retry_after("dave", "10.0.0.1", 50) == pytest.approx(60)
    lim.succeeded("alice")
    assert lim.retry_after("alice", "10.0.0.2", 50) == 0


def test_mask_keeps_the_prefix_and_two_last_digits():
    assert mask("+8613800138000") == "+86138******00"
    assert len(mask("+8613800138000")) == len("+8613800138000")
    assert mask(None) == "" and mask("+1234")[-2:] == "34"


def test_each_action_needs_its_least_role_and_unknown_actions_are_refused():
    viewer, sup = Identity("v", "viewer", "web"), Identity("s", "supervisor", "web")
    comp, admin = Identity("c", "compliance", "web"), Identity("a", "admin", "web")
    assert not authz.allowed(viewer, "pause") and authz.allowed(sup, "pause") and authz.allowed(admin, "resume")
    assert not authz.allowed(sup, "override_approve") and authz.allowed(comp, "override_approve")
    assert not authz.allowed(comp, "users_manage") and authz.allowed(admin, "users_manage")
    assert authz.allowed(viewer, "eligibility") and not authz.allowed(viewer, "view_numbers")
    assert authz.allowed(viewer, "view_callerids") and not authz.allowed(None, "view_callerids")
    assert not authz.allowed(None, "view")
    with pytest.raises(authz.Forbidden, match="not an action"):
        authz.require(admin, "format_disk")
    with pytest.raises(authz.Forbidden, match="needs the role supervisor"):
        authz.require(viewer, "pause")
    assert all(a.role in users.ROLES for a in authz.ACTIONS.values())


def test_actor_is_the_authenticated_identity():
    assert authz.actor_of(Identity("ann", "supervisor", "web")) == "web:ann"
    assert authz.actor_of(Identity("crm", "viewer", "token:abc")) == "token:abc:crm"


def test_passwords_are_argon2id_and_tokens_carry_only_a_hashable_secret():
    h = users.hash_password("correct horse battery")
    assert h.startswith("$argon2id$")
    assert users.verify_password(h, "correct horse battery") and not users.verify_password(h, "wrong")
    assert not users.verify_password(None, "anything") and not users.verify_password("garbage", "x")
    with pytest.raises(users.UserError):
        users.hash_password("short")
    tok, tid, digest = users.new_token()
    assert users.parse_token(tok) == (tid, tok.split("_", 2)[2])
    assert users.sha256(tok.split("_", 2)[2]) == digest and tok not in digest
    assert users.parse_token("dgt_short_x") is None


def test_every_console_text_exists_in_both_languages_with_the_same_placeholders():
    import string

    from dialguard.web.i18n import TEXT, pick, t

    for key, (en, zh) in TEXT.items():
        assert en.strip() and zh.strip(), key
        names = [{f for _, f, _, _ in string.Formatter().parse(x) if f} for x in (en, zh)]
        assert names[0] == names[1], key
    assert pick(None, "zh-CN,zh;q=0.9") == "zh" and pick(None, "en-US") == "en" and pick("en", "zh-CN") == "en"
    assert pick("fr", None) == "en"
    assert t("zh", "paused_item", what="x", since="y").startswith("已暂停")


def test_every_admin_action_has_the_least_role_the_issue_asks_and_docs_say_so():
    """Issue 15's table: the role each admin write needs, in authz and in docs/WEB.md's table."""
    import re
    from pathlib import Path

    expected = {"optout_record": "supervisor", "dnc_edit": "supervisor", "dnc_remove": "compliance",
                "callerid_edit": "compliance", "override_revoke": "supervisor", "campaign_revoke": "compliance",
                "pause": "supervisor", "resume": "supervisor", "override_request": "supervisor",
                "override_approve": "compliance", "campaign_request": "supervisor", "campaign_approve": "compliance",
                "rules_apply": "compliance", "calendar_publish": "compliance", "users_manage": "admin"}
    for action, role in expected.items():
        assert authz.ACTIONS[action].role == role, action
        assert authz.ACTIONS[action].implemented or action == "users_manage", action  # users: the admin DB login
    doc = (Path(__file__).parents[2] / "docs" / "WEB.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in doc.splitlines()
            if line.startswith("| ") and line.count("|") >= 4]
    for action, a in authz.ACTIONS.items():
        roles = {r[1] for r in rows if action in re.findall(r"[a-z_]+", re.split(r"[(:]", r[0])[0])}
        assert roles == {a.role}, (action, roles)
