-- Per decision: the imported calendar version it was decided under, and the
-- calendars whose day was an estimate (issue 12: a year the calendar data does
-- not know, decided under a pack's `unknown_year: allow|weekdays`).
-- NULL on rows shipped before this migration, or with nothing imported / estimated.
-- Calendar versions themselves are admin records (action calendar_publish /
-- calendar_activate in audit_admin_actions, the full set of years in payload).
-- No index: no query of the code filters on them (see 070); an installation that
-- reports on estimates often may add one.
ALTER TABLE audit_decisions
    ADD COLUMN calendar_version integer,     -- imported calendar version (payload cal); NULL: none imported
    ADD COLUMN calendar_estimated text[];    -- calendar codes estimated (payload est), e.g. {CN}

COMMENT ON COLUMN audit_decisions.calendar_version IS 'Imported calendar version (dialguard calendar import/activate) in effect; NULL when none was imported';
COMMENT ON COLUMN audit_decisions.calendar_estimated IS 'Calendars (CN, US-LA, ...) whose day was estimated for a year the calendar data does not know (rules unknown_year allow/weekdays)';
