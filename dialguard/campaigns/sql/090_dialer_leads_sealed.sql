-- Dialer leads and calls without plaintext numbers (issue 13): like the audit, a lead
-- holds number_hash (the keyed hash also used in Redis keys and
-- audit_decisions.number_hash, HMAC with DIALGUARD_HASH_SECRET of "n:" + E.164)
-- and number_enc (the E.164 sealed with DIALGUARD_DATA_KEY). Dedup is by hash:
-- the unique key becomes (campaign, number_hash, subject). The dialer opens
-- number_enc to dial.
--
-- SQL has neither key, so rows written before this file keep their number
-- until `dialguard db migrate` seals them right after applying it
-- (dialguard/audit/migrate.py, seal_plaintext_leads: hash + seal, number set
-- to NULL, this constraint validated, the table rewritten by VACUUM FULL so no
-- dead row keeps the plaintext). The column stays, always NULL, so that an
-- older dialer fails loudly instead of writing plaintext.

ALTER TABLE dialer_leads ADD COLUMN number_hash text, ADD COLUMN number_enc text;
ALTER TABLE dialer_leads ALTER COLUMN number DROP NOT NULL;
ALTER TABLE dialer_leads DROP CONSTRAINT IF EXISTS dialer_leads_campaign_number_subject_key;
CREATE UNIQUE INDEX dialer_leads_campaign_hash_subject ON dialer_leads (campaign, number_hash, subject);
ALTER TABLE dialer_leads ADD CONSTRAINT dialer_leads_sealed
    CHECK (number IS NULL AND number_hash IS NOT NULL AND number_enc IS NOT NULL) NOT VALID;
COMMENT ON COLUMN dialer_leads.number IS 'always NULL since 090: the number is number_enc (sealed), deduplicated by number_hash';

-- The caller ID a call presented: sealed as well (caller_id_enc), as the audit
-- seals caller_id_requested; caller_id stays NULL from now on.
ALTER TABLE dialer_calls ADD COLUMN caller_id_enc text;
ALTER TABLE dialer_calls ADD CONSTRAINT dialer_calls_sealed CHECK (caller_id IS NULL) NOT VALID;
COMMENT ON COLUMN dialer_calls.caller_id IS 'always NULL since 090: the caller ID is caller_id_enc (sealed)';
