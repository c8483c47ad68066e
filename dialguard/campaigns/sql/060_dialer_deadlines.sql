-- Campaign dialer (issue 7), after 050 (applied on deployed databases: never edited).
--
-- dialer_calls.max_duration_s, hangup_deadline: the decision's maximum duration and
--   the wall-clock time the call must be cut (answered_at + max_duration_s), so a
--   restarted dialer re-arms the cut for calls already up, or cuts at once.
-- dialer_campaigns.dialer: the dialer (its Stasis app name) a campaign is assigned
--   to; NULL: any dialer that runs every campaign. Which one of them dials it is
--   decided at run time by a PostgreSQL advisory lock per campaign.
-- dialer_leads.disposition_at, follow_up_at: an agent's disposition given while the
--   call is still up is kept here and applied by the dialer when the call ends.
-- Columns are added only when missing (ALTER TABLE demands ownership even when
-- there is nothing to add, and 050's tables may have been created by hand).

DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT * FROM (VALUES
        ('dialer_calls', 'max_duration_s', 'integer NOT NULL DEFAULT 0 CHECK (max_duration_s >= 0)'),
        ('dialer_calls', 'hangup_deadline', 'timestamptz'),
        ('dialer_campaigns', 'dialer', 'text'),
        ('dialer_leads', 'disposition_at', 'timestamptz'),
        ('dialer_leads', 'follow_up_at', 'timestamptz')
    ) AS t(tbl, name, ddl) LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = col.tbl
                         AND column_name = col.name) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', col.tbl, col.name, col.ddl);
        END IF;
    END LOOP;
END
$$;

