"""Each place that needs a campaign's rules gets them from the one order
(dialguard/decision/rules_choice.campaign_rules; its cases: tests/unit/test_rules_choice.py):
the engine's context (what decisions and the dialer use), the CLI's checks before a campaign
starts, and the report by campaign. Before, each wrote the order out itself. Here each one,
on the real Redis / PostgreSQL, answers every case as the order says, through the function."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import psycopg
import pytest

from fakes.dialer_db import ensure_schema
from dialguard.decision import rules_choice
from dialguard.rules import Policy
from dialguard.rules_store import RulesStore


@pytest.fixture
def through(monkeypatch):
    """Every call of campaign_rules, by the module that made it: (own, the rules it picked)."""
    calls = []
    real = rules_choice.campaign_rules

    def spy(where):
        def f(own, in_effect, node, **kw):
            got = real(own, in_effect, node, **kw)
            calls.append((where, own or None, got.source))
            return got
        return f

    import dialguard.decision.decider as decider
    import dialguard.rules_store as rules_store

    monkeypatch.setattr(decider, "campaign_rules", spy("engine"))
    monkeypatch.setattr(rules_store, "campaign_rules", spy("rules_store"))
    monkeypatch.setattr(rules_choice, "campaign_rules", spy("imported"))  # the report, the CLI without Redis
    return calls


async def test_the_engine(make_engine, through):
    e = await make_engine(Policy.load("cn-default"))
    await e.set_campaign("own", rules="us-tcpa")
    await e.set_campaign("plain")
    assert (await e.campaign_policy("own")).name == "us-tcpa"
    assert (await e.campaign_policy("plain")).name == "cn-default"
    await RulesStore(e.redis, e.keys).apply("uk-ofcom")
    e._forget()
    assert (await e.campaign_policy("own")).name == "us-tcpa"
    assert (await e.campaign_policy("plain")).name == "uk-ofcom"
    assert through == [("engine", "us-tcpa", "campaign"), ("engine", None, "node"),
                       ("engine", "us-tcpa", "campaign"), ("engine", None, "version")]


async def test_the_cli_checks_before_a_campaign_starts(make_engine, through, monkeypatch, settings):
    from dialguard.cli.campaigns import _policy_of

    e = await make_engine(Policy.load("cn-default"))
    monkeypatch.setenv("DIALGUARD_KEY_PREFIX", e.keys.prefix)
    monkeypatch.setenv("DIALGUARD_RULES", "cn-default")
    await e.set_campaign("eng-own", rules="us-tcpa")  # own packs in the engine's record only

    async def name(rules, campaign="c"):
        p = await _policy_of(SimpleNamespace(name=campaign, rules=rules))
        return p.name if p is not None else None

    assert await name("us-tcpa") == "us-tcpa"
    assert await name(None) == "cn-default"
    assert await name(None, "eng-own") == "us-tcpa"
    await RulesStore(e.redis, e.keys).apply("uk-ofcom")
    assert await name(None) == "uk-ofcom"
    assert await name("us-tcpa") == "us-tcpa"
    assert await name("no-such-pack") is None
    # Redis unreachable: the campaign's own packs, else the node's
    monkeypatch.setenv("DIALGUARD_REDIS_URL", "redis://127.0.0.1:1/0")
    assert await name("us-tcpa") == "us-tcpa"
    assert await name(None) == "cn-default"
    # the dialer's record names its own packs: decided without Redis ("imported")
    assert [(w, o, s) for w, o, s in through] == [
        ("imported", "us-tcpa", "campaign"), ("rules_store", None, "node"),
        ("rules_store", "us-tcpa", "campaign"), ("rules_store", None, "version"),
        ("imported", "us-tcpa", "campaign"),
        ("imported", "us-tcpa", "campaign"), ("imported", None, "node")]


def test_the_report_by_campaign(pg_dsn, through):
    from dialguard.audit import report as rp

    ensure_schema(pg_dsn)
    tag = uuid.uuid4().hex[:8]
    own, plain, bad = f"own-{tag}", f"plain-{tag}", f"bad-{tag}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("insert into dialer_campaigns (name, rules) values (%s, 'us-tcpa'), (%s, null), "
                     "(%s, 'no-such-pack')", (own, plain, bad))
        try:
            of = rp.campaign_policies(conn, "cn-default")
            assert (of(own).name, of(plain).name, of(bad), of(f"none-{tag}")) == (
                "us-tcpa", "cn-default", None, None)
            of = rp.campaign_policies(conn, "cn-default", in_effect=Policy.load("uk-ofcom"))
            assert (of(own).name, of(plain).name) == ("us-tcpa", "uk-ofcom")
        finally:
            conn.execute("delete from dialer_campaigns where name in (%s, %s, %s)", (own, plain, bad))
    # the campaign the dialer does not run asks nothing; the bad packs fail inside
    assert through == [("imported", "us-tcpa", "campaign"), ("imported", None, "node"),
                       ("imported", "us-tcpa", "campaign"), ("imported", None, "version")]
