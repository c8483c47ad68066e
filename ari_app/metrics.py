"""The dialer's metrics, on the process-wide registry of dialguard.metrics.

`/metrics` and `/healthz` are served by dialguard.metrics.MetricsServer (port
DIALGUARD_DIALER_METRICS_PORT, docs/PORTS.md); `/healthz` is 503 while the ARI
events socket is down, because the dialer places no call then.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from dialguard.metrics import ABANDON_RATE, REGISTRY

CALLS_IN_FLIGHT = Gauge("dialguard_dialer_calls_in_flight",
                        "Dialer calls placed and not ended yet, per campaign", ["campaign"], registry=REGISTRY)
ORIGINATE_FAILURES = Counter("dialguard_dialer_originate_failures_total",
                             "Originates Asterisk refused or never confirmed, per campaign", ["campaign"],
                             registry=REGISTRY)
MESSAGE_FAILED = Counter("dialguard_dialer_message_failed_total",
                         "Abandon or answering-machine messages Asterisk could not play (the callee, still "
                         "on the line, was hung up without hearing it), per campaign and kind",
                         ["campaign", "kind"], registry=REGISTRY)
EVENTS_SOCKET_UP = Gauge("dialguard_dialer_events_socket_up",
                         "1 while the ARI events socket is connected and reconciled (the dialer dials only then)",
                         registry=REGISTRY)
EVENTS_CONNECTS = Gauge("dialguard_dialer_events_connects",
                        "Connections of the ARI events socket since the dialer started (1 + reconnects)",
                        registry=REGISTRY)
CAMPAIGNS_HELD = Gauge("dialguard_dialer_campaigns_held",
                       "Campaigns whose lock this dialer holds (one dialer per campaign)", registry=REGISTRY)

ABANDON_LIMIT = Gauge("dialguard_dialer_abandon_limit",
                      "The tightest abandon limit of the campaign (0..1): its packs' and its own daily one; "
                      "dialguard_abandon_rate is measured against it", ["campaign"], registry=REGISTRY)
ABANDON_HELD = Gauge("dialguard_dialer_abandon_held",
                     "1 while the campaign originates nothing because an abandon limit is reached",
                     ["campaign"], registry=REGISTRY)

ABANDON_CALLABLE_AT = Gauge("dialguard_dialer_abandon_callable_at",
                            "Stopped by an abandon limit: when the rate is back within it if nothing more is "
                            "dialed (Unix seconds); 0 otherwise", ["campaign"], registry=REGISTRY)

HELD_BACK = Gauge("dialguard_dialer_held_back",
                  "1 while a kill switch (all outbound, the campaign, or all its caller IDs) or a missing "
                  "lawful abandon message holds the campaign's leads back: none is taken, none denied",
                  ["campaign"], registry=REGISTRY)
LEADS_PARKED = Gauge("dialguard_dialer_leads_parked",
                     "Leads of the campaign parked by a region kill switch (pause --region), as last parked or "
                     "released by this dialer", ["campaign"], registry=REGISTRY)

CALENDAR_UNKNOWN = Counter("dialguard_dialer_calendar_unknown_total",
                           "Leads held back because the earliest time they may be called is in a year a "
                           "calendar does not know yet (import it: dialguard calendar import), per campaign",
                           ["campaign"], registry=REGISTRY)

AGENTS_FREE = Gauge("dialguard_dialer_agents_free",
                    "Agents of this dialer free to be offered a call: no lease held by any dialer, device not in use",
                    registry=REGISTRY)
AGENT_LEASES_RECOVERED = Counter("dialguard_dialer_agent_leases_recovered_total",
                                 "Agent leases of a dialer that stopped its heartbeat (crashed), recovered once "
                                 "Asterisk showed the agent off that call", registry=REGISTRY)

__all__ = ["ABANDON_RATE", "CALLS_IN_FLIGHT", "ORIGINATE_FAILURES", "EVENTS_SOCKET_UP", "EVENTS_CONNECTS",
           "CAMPAIGNS_HELD", "ABANDON_LIMIT", "ABANDON_HELD", "ABANDON_CALLABLE_AT", "HELD_BACK",
           "LEADS_PARKED", "AGENTS_FREE", "AGENT_LEASES_RECOVERED"]
