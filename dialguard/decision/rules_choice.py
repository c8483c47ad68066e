"""Which rules decide a campaign's calls: the one place that says it.

The order, first that applies:

1. the campaign's own packs (`campaign set --rules`, `campaign approve --rules`: the
   `rules` of its record); shadow rules are not evaluated for it. Own packs that cannot
   be loaded raise RulesError: never another set of rules in their place (the engine
   denies the campaign's calls with the reason);
2. the rules version in effect (`dialguard rules apply`, the console), with the shadow
   version beside it;
3. the node's own rules (DIALGUARD_RULES).

Callers: the engine's context of a campaign (Decider._context, which the dialer reads
through campaign_policy), the CLI's checks before a campaign starts
(dialguard/cli/campaigns.py, through RulesStore.campaign_rules) and the abandon limits of
the report by campaign (dialguard/audit/report.py). Each fetches the inputs from its store
and leaves the order to this function.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from dialguard.rules import Policy

CAMPAIGN, VERSION, NODE = "campaign", "version", "node"


class CampaignRules(NamedTuple):
    policy: Policy
    shadow: Policy | None  # the shadow rules evaluated beside it (None with the campaign's own)
    source: str  # CAMPAIGN, VERSION or NODE: where the rules came from


def campaign_rules(own: str | None, in_effect: Policy | None, node: Policy | str, *,
                   shadow: Policy | None = None,
                   load: Callable[[str], Policy] = Policy.load) -> CampaignRules:
    """The rules of a campaign whose record names `own` packs (None or '' for none), with
    `in_effect` the rules version in effect (None: none is), `shadow` the shadow version,
    and `node` the node's rules (a Policy, or its packs for `load`). `load` turns packs into
    a Policy (a caller's cache); its RulesError for the campaign's own packs propagates."""
    if own:
        return CampaignRules(load(own), None, CAMPAIGN)
    if in_effect is not None:
        return CampaignRules(in_effect, shadow, VERSION)
    return CampaignRules(load(node) if isinstance(node, str) else node, shadow, NODE)
