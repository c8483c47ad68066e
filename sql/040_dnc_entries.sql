-- DNC lists at rest (issue 8; docs/REDIS.md, "DNC lists"). Redis holds only
-- 40-bit fingerprints of each number's keyed hash, which can neither be
-- exported nor rebuilt into anything else: this table is the list itself.
--
-- State, not audit: `dnc remove` deletes its row (the change is audited in
-- audit_events by the engine). The service role may read and write it through
-- the default privileges set in 010_audit.sql.
--
-- One row per (list, number). list is 'global' or a campaign name, as given to
-- `dialguard dnc ... --campaign`; number_hash is the keyed hash (HMAC-SHA256
-- with the installation secret, hex) that also keys the number in Redis, so a
-- counters rebuild restores the Redis buckets from this table alone;
-- number_enc is the E.164 sealed with AES-GCM by the application key
-- (DIALGUARD_DATA_KEY): `dnc export` opens it. No plaintext number.

CREATE TABLE IF NOT EXISTS dnc_entries (
    list         text NOT NULL,
    number_hash  text NOT NULL,
    number_enc   text NOT NULL,
    source       text NOT NULL,                  -- imported file name, or 'cli'
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list, number_hash)
);

COMMENT ON TABLE dnc_entries IS 'Do-not-call lists at rest: one row per (list, number); Redis holds fingerprints only';
COMMENT ON COLUMN dnc_entries.list IS '''global'' or the campaign name';
COMMENT ON COLUMN dnc_entries.number_hash IS 'keyed hash of the E.164 (HMAC-SHA256, installation secret), as in Redis keys';
COMMENT ON COLUMN dnc_entries.number_enc IS 'E.164 sealed with AES-GCM by the application key (DIALGUARD_DATA_KEY)';
COMMENT ON COLUMN dnc_entries.source IS 'imported CSV file name, or cli for dnc add';
