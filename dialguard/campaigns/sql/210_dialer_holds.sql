-- Leads held back without a decision (issue #18 items 2 and 6), after 181.
--
-- dialer_leads.parked: the jurisdiction whose kill switch (`dialguard pause --region`)
--   holds this lead (ISO 3166-2 or a country), NULL otherwise. A parked lead stays
--   `pending` and keeps its next_eligible_at; the dialer claims no parked lead and
--   clears `parked` as soon as that region is no longer paused (resume, or the end of
--   the pause's window), so it is dialed again at the dialer's next tick.
-- dialer_holds: one row per hold, for `dialguard report` ("held back": leads that
--   were not attempted, as opposed to denials, which are attempts):
--   reason  paused          a kill switch on the campaign, on all outbound or on
--                           every caller ID of its pool (detail says which);
--                           leads = its due leads when the hold began
--           region_paused   one lead parked by a region kill switch (detail: the region)
--           zone_closed     one lead whose callee zone was closed, put back to its opening
--           abandon_limit   the campaign stopped by an abandon limit (detail: the limit);
--                           leads = its due leads when the hold began
--           no_message      the campaign has no abandon message of its own and a pack
--                           it runs under requires a lawful one
--   started_at / ended_at on the guard's clock (NULL ended_at: still held).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'dialer_leads'
                     AND column_name = 'parked') THEN
        ALTER TABLE dialer_leads ADD COLUMN parked text;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS dialer_holds (
    id          bigserial PRIMARY KEY,
    campaign    text NOT NULL,
    reason      text NOT NULL
                CHECK (reason IN ('paused', 'region_paused', 'zone_closed', 'abandon_limit', 'no_message')),
    detail      text NOT NULL DEFAULT '',
    lead_id     bigint,
    leads       integer NOT NULL DEFAULT 0 CHECK (leads >= 0),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

DO $$
BEGIN
    IF to_regclass('dialer_holds_campaign_at') IS NULL THEN
        CREATE INDEX dialer_holds_campaign_at ON dialer_holds (campaign, started_at);
    END IF;
    IF to_regclass('dialer_holds_open') IS NULL THEN
        CREATE INDEX dialer_holds_open ON dialer_holds (campaign) WHERE ended_at IS NULL;
    END IF;
    IF to_regclass('dialer_leads_parked') IS NULL THEN
        CREATE INDEX dialer_leads_parked ON dialer_leads (campaign) WHERE parked IS NOT NULL;
    END IF;
END
$$;
