-- Descriptions of the audit tables, readable in the database (\d+ in psql).
COMMENT ON TABLE audit_decisions IS
    'One row per decision (allowed or denied), from the Redis audit stream; append-only (docs/AUDIT.md)';
COMMENT ON COLUMN audit_decisions.decided_at IS 'the decision clock ("now" of the request)';
COMMENT ON COLUMN audit_decisions.recorded_at IS 'Redis time of the atomic check-and-reserve (stream id)';
COMMENT ON COLUMN audit_decisions.number_hash IS 'keyed hash (HMAC-SHA256) of the E.164 number, as in Redis keys';
COMMENT ON COLUMN audit_decisions.number_enc IS 'E.164 number sealed with AES-GCM (DIALGUARD_DATA_KEY); NULL if invalid';
COMMENT ON COLUMN audit_decisions.caller_id_requested IS
    'caller ID the request named, sealed with AES-GCM like number_enc (the shipper seals it)';
COMMENT ON COLUMN audit_decisions.caller_id_hash IS
    'keyed hash of the caller ID chosen (on a deny: the one that passed the caller-ID rules, if any)';
COMMENT ON COLUMN audit_decisions.request IS 'the record as the engine wrote it (caller ID sealed)';
COMMENT ON TABLE audit_outcomes IS 'Call outcomes as reported; decision_id NULL when the call id was unknown';
COMMENT ON TABLE audit_events IS 'Opt-outs, complaints, consent and DNC changes per number';
COMMENT ON TABLE audit_overrides IS 'Admin-granted one-time exceptions: who, why, which reasons';
COMMENT ON TABLE audit_admin_actions IS 'Administrative changes: kill switches, approvals, caller IDs';
COMMENT ON TABLE audit_campaigns IS 'Campaign names behind the short hashes used in Redis keys';
COMMENT ON TABLE audit_caller_ids IS 'Caller-ID numbers (sealed) behind their keyed hashes';
COMMENT ON TABLE audit_rejects IS 'Stream entries that could not be read as records, kept raw';
