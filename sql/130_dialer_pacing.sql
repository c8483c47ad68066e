-- Dialer pacing, agents and lead order (issue #18 items 4 and 7), after 090.
--
-- dialer_campaigns.pacing_mode: progressive | predictive | preview | ratio (ari_app/pacing_modes.py).
-- dialer_campaigns.wrap_up_s: an agent's wrap-up time after each call of this campaign,
--   during which no call is offered to it.
-- dialer_campaigns.retry_rules: per outcome its own delay and maximum
--   ("busy=5m/3,no_answer=1h/4,abandoned=3d/1,amd=1d/2", dialguard/campaigns/retry.py).
-- dialer_leads.priority: higher first among due leads.
-- dialer_leads.owner_agent: a callback owned by that agent: dialed only while that
--   agent is ready, and offered to no other agent.
-- dialer_agents: the CLI's word on an agent (logged_out, ready, break); on_call and
--   wrap_up are derived by the dialer from its calls and Asterisk's device states.
-- Columns are added only when missing (as 060).

DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT * FROM (VALUES
        ('dialer_campaigns', 'pacing_mode',
         'text NOT NULL DEFAULT ''progressive'' CHECK (pacing_mode IN (''progressive'', ''predictive'', ''preview'', ''ratio''))'),
        ('dialer_campaigns', 'wrap_up_s', 'integer NOT NULL DEFAULT 0 CHECK (wrap_up_s BETWEEN 0 AND 3600)'),
        ('dialer_campaigns', 'retry_rules', 'text NOT NULL DEFAULT '''''),
        ('dialer_leads', 'priority', 'integer NOT NULL DEFAULT 0'),
        ('dialer_leads', 'owner_agent', 'text')
    ) AS t(tbl, name, ddl) LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = col.tbl
                         AND column_name = col.name) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', col.tbl, col.name, col.ddl);
        END IF;
    END LOOP;
END
$$;

CREATE TABLE IF NOT EXISTS dialer_agents (
    name        text PRIMARY KEY,
    state       text NOT NULL DEFAULT 'logged_out' CHECK (state IN ('logged_out', 'ready', 'break')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- due leads by priority, then oldest due
CREATE INDEX IF NOT EXISTS dialer_leads_due_priority
    ON dialer_leads (campaign, priority DESC, next_eligible_at) WHERE state = 'pending';

-- the measured figures of predictive pacing: a campaign's latest calls
CREATE INDEX IF NOT EXISTS dialer_calls_recent ON dialer_calls (campaign, created_at);
