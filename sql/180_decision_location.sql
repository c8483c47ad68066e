-- Per decision (issue 19): where the business said the callee lives and the
-- person behind the number, as the request gave them (SPEC section 2).
-- region: ISO 3166-2 (US-FL, CN-GD); postal_code: as given (a US ZIP code);
-- party_hash: the keyed hash of the party id (HMAC-SHA256 with the
-- installation's secret, like number_hash): never the id itself.
-- NULL when the request did not carry them, and on rows shipped before.
ALTER TABLE audit_decisions
    ADD COLUMN region text,
    ADD COLUMN postal_code text,
    ADD COLUMN party_hash text;

COMMENT ON COLUMN audit_decisions.region IS 'ISO 3166-2 code of where the business said the callee lives (request field region)';
COMMENT ON COLUMN audit_decisions.postal_code IS 'The callee''s postal code as the request gave it (request field postal_code)';
COMMENT ON COLUMN audit_decisions.party_hash IS 'Keyed hash of the request''s party (the person or account behind the number)';
