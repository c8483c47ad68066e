"""The one order that picks a campaign's rules (dialguard/decision/rules_choice.py), each
case: its own packs, else the rules version in effect, else the node's. The engine, the
CLI's campaign checks and the report by campaign all go through it
(tests/integration/test_rules_choice_sites.py)."""

from __future__ import annotations

import pytest

from dialguard.decision.rules_choice import CAMPAIGN, NODE, VERSION, campaign_rules
from dialguard.rules import Policy, RulesError

OWN, VER, SHADOW, NODE_P = (Policy.load(p) for p in ("us-tcpa", "uk-ofcom", "cn-carrier", "cn-default"))


def loader(*known: Policy):
    loaded = []

    def load(spec: str) -> Policy:
        loaded.append(spec)
        for p in known:
            if p.name == spec.replace(",", "+"):
                return p
        raise RulesError(f"no pack {spec}")
    load.loaded = loaded
    return load


@pytest.mark.parametrize("in_effect", [VER, None])
@pytest.mark.parametrize("shadow", [SHADOW, None])
def test_the_campaigns_own_packs_come_first_without_shadow(in_effect, shadow):
    load = loader(OWN)
    got = campaign_rules("us-tcpa", in_effect, NODE_P, shadow=shadow, load=load)
    assert got == (OWN, None, CAMPAIGN) and load.loaded == ["us-tcpa"]


@pytest.mark.parametrize("own", [None, ""])
def test_without_own_packs_the_version_in_effect_with_its_shadow(own):
    load = loader()
    assert campaign_rules(own, VER, NODE_P, shadow=SHADOW, load=load) == (VER, SHADOW, VERSION)
    assert campaign_rules(own, VER, "cn-default", load=load) == (VER, None, VERSION)
    assert load.loaded == []  # the node's packs are not even loaded


def test_without_either_the_nodes_rules_a_policy_or_packs_to_load():
    assert campaign_rules(None, None, NODE_P) == (NODE_P, None, NODE)
    load = loader(NODE_P)
    assert campaign_rules(None, None, "cn-default", shadow=SHADOW, load=load) == (NODE_P, SHADOW, NODE)
    assert load.loaded == ["cn-default"]


def test_own_packs_that_cannot_load_are_an_error_never_other_rules():
    with pytest.raises(RulesError):
        campaign_rules("no-such-pack", VER, NODE_P, load=loader(VER, NODE_P))
    with pytest.raises(RulesError):
        campaign_rules("no-such-pack", None, NODE_P)  # the default loader: Policy.load
