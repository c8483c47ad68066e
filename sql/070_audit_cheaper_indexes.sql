-- Cheaper indexes on the audit's busiest tables (docs/AUDIT.md, "Indexes"), after 060.
--
-- Every shipped decision updated 7 btrees and every outcome 3: a good part of
-- PostgreSQL's CPU and WAL per record (bench/audit.py). Kept: what a query of
-- the code uses. report.py filters decisions by decided_at (audit_decisions_at)
-- and looks up the last call to a number (audit_decisions_number_at); `audit
-- show` finds outcomes by decision_id; `audit history` by number_hash;
-- `counters rebuild` reads decisions and outcomes in recorded_at order
-- (audit_decisions_recorded, audit_outcomes_recorded); call_id stays indexed for
-- investigations that start from a CDR.
--
-- Dropped: indexes no query uses.
-- * audit_decisions_campaign_at (campaign, decided_at): reports group by campaign
--   within a decided_at range, which audit_decisions_at serves.
-- * audit_decisions_cid_at (caller_id_hash, decided_at): no query filters by
--   caller ID; `report --by caller_id` groups within a decided_at range too.
-- An installation that needs one for its own queries may create it again.

DROP INDEX IF EXISTS audit_decisions_campaign_at;
DROP INDEX IF EXISTS audit_decisions_cid_at;
