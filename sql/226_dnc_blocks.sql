-- Imported DNC numbers in blocks (issue 21, DNC import speed; docs/REDIS.md "DNC lists",
-- docs/BENCHMARKS.md "DNC import", stop 15).
--
-- One dnc_entries row per number costs PostgreSQL a heap tuple and an entry in
-- a random-key B-tree: about 390 bytes of WAL a number (a third to two thirds
-- full-page images of B-tree leaves touched again after each checkpoint) and
-- 2.3 us of backend CPU; a 10-million-number import wrote about 4 GB of WAL.
-- `dnc import` now stores a list in blocks: one row per (import batch, worker,
-- hash range) holding the batch's numbers of that range, their keyed hashes
-- side by side (sorted, 16 bytes each) and their E.164s sealed as one AES-GCM
-- message bound to those hashes. The numbers' bytes are written once, plus a
-- heap tuple and an index entry per block of a few hundred.
--
-- The list is the union of dnc_entries (`dnc add`, the console's single adds,
-- and every row written before this migration, kept as they are: nothing to
-- convert, every reader reads both) and dnc_blocks; a number is in at most one
-- row of the two tables (dialguard/dnc.py checks under a per-list advisory
-- lock: an import skips numbers already listed, `dnc add` skips numbers a
-- block holds). `dnc remove` deletes its dnc_entries row or rewrites its block
-- without it (re-sealed with a fresh nonce; a block left empty is deleted), so
-- a removed number is gone at rest and a counters rebuild does not list it again.
--
-- hash_range is the first 10 bits of every hash in the block (0..1023): a
-- single number's lookup reads the few blocks of its range. No plaintext
-- number: hashes are HMAC-SHA256 (installation secret, first 16 bytes, as in
-- dnc_entries.number_hash), sealed is nonce + ciphertext + tag.

CREATE TABLE IF NOT EXISTS dnc_blocks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list        text NOT NULL,
    hash_range  integer NOT NULL CHECK (hash_range BETWEEN 0 AND 1023),
    entries     integer NOT NULL CHECK (entries > 0),
    hashes      bytea NOT NULL,
    sealed      bytea NOT NULL,
    source      text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dnc_blocks_hashes_16_bytes_each CHECK (octet_length(hashes) = 16 * entries)
);

CREATE INDEX IF NOT EXISTS dnc_blocks_list_range ON dnc_blocks (list, hash_range);

-- random bytes do not compress: no compression attempt, straight out of line
ALTER TABLE dnc_blocks ALTER COLUMN hashes SET STORAGE EXTERNAL, ALTER COLUMN sealed SET STORAGE EXTERNAL;

COMMENT ON TABLE dnc_blocks IS
    'Imported DNC numbers in blocks (dialguard/dnc.py); the list at rest is dnc_entries + dnc_blocks, a number in one row only';
COMMENT ON COLUMN dnc_blocks.hash_range IS 'first 10 bits of every hash of the block';
COMMENT ON COLUMN dnc_blocks.hashes IS
    'the keyed hashes (HMAC-SHA256, installation secret, first 16 bytes), sorted, 16 bytes each';
COMMENT ON COLUMN dnc_blocks.sealed IS
    'the E.164s in hash order (a length byte and the ASCII each) sealed as one with AES-GCM by the application key, '
    'the hashes as associated data: 12-byte nonce + ciphertext and tag';
COMMENT ON COLUMN dnc_blocks.source IS 'imported CSV file name, or web:<file> for the console''s upload';
