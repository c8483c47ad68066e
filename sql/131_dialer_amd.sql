-- Answering-machine detection per campaign (issue #18 item 5), after 130.
--
-- dialer_campaigns.amd: run Asterisk's AMD() on the customer's leg after the answer,
--   before any agent is offered the call (dialplan context dialguard-amd).
-- dialer_campaigns.amd_action: a machine is never bridged: `hangup` at once, or
--   `message`: amd_media (an Asterisk media URI, e.g. sound:custom/spring-machine)
--   is played, then the call is hung up.
-- dialer_calls.amd_status / amd_cause: AMD's AMDSTATUS and AMDCAUSE (MACHINE, HUMAN,
--   NOTSURE, HANGUP), for the report. A MACHINE call ends with result `amd`.

DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT * FROM (VALUES
        ('dialer_campaigns', 'amd', 'boolean NOT NULL DEFAULT false'),
        ('dialer_campaigns', 'amd_action',
         'text NOT NULL DEFAULT ''hangup'' CHECK (amd_action IN (''hangup'', ''message''))'),
        ('dialer_campaigns', 'amd_media', 'text'),
        ('dialer_calls', 'amd_status', 'text'),
        ('dialer_calls', 'amd_cause', 'text')
    ) AS t(tbl, name, ddl) LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = col.tbl
                         AND column_name = col.name) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', col.tbl, col.name, col.ddl);
        END IF;
    END LOOP;
END
$$;
