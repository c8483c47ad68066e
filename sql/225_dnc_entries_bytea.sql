-- dnc_entries as bytes (issue 21, DNC import speed; docs/BENCHMARKS.md "DNC import").
--
-- number_hash was the keyed hash in hex (32 characters) and number_enc the
-- sealed E.164 in base64: text PostgreSQL compared with collation rules in a
-- 10-million-row B-tree, and the import's workers spent time writing hex and
-- base64 that nothing needs. As bytea the key is 16 bytes compared with
-- memcmp and the sealed number its raw nonce + ciphertext: about a fifth less
-- backend CPU and disk a row (bench/dnc_pg_shapes.py), and the import COPYs
-- them in binary. The values are the same (decoded, not re-hashed or
-- re-sealed): `dnc export`, `counters rebuild`, `dnc remove` read existing
-- rows unchanged. The rewrite takes a while on a large list (about the time
-- of an import of it without the normalization).

ALTER TABLE dnc_entries
    ALTER COLUMN number_hash TYPE bytea USING decode(number_hash, 'hex'),
    ALTER COLUMN number_enc TYPE bytea USING decode(number_enc, 'base64');

-- A writer that sent hex or base64 text by mistake would store 32 or more bytes.
ALTER TABLE dnc_entries ADD CONSTRAINT dnc_entries_hash_16_bytes CHECK (octet_length(number_hash) = 16);

COMMENT ON COLUMN dnc_entries.number_hash IS
    'keyed hash of the E.164 (HMAC-SHA256, installation secret, first 16 bytes), as in Redis keys (there in hex)';
COMMENT ON COLUMN dnc_entries.number_enc IS
    'E.164 sealed with AES-GCM by the application key (DIALGUARD_DATA_KEY): 12-byte nonce + ciphertext and tag';
