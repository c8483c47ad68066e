-- Idempotent replays are audited too (SPEC §2, issue 13): a repeated call id
-- whose request is identical to an earlier one gets that earlier answer again,
-- and the stream records it as its own entry with `rp` = the decision it
-- repeats. Such a row is an answer, not an attempt: `counters rebuild` and the
-- reports count attempts from rows where replay_of IS NULL.
ALTER TABLE audit_decisions ADD COLUMN replay_of text;  -- the decision this answer repeated; NULL: decided
COMMENT ON COLUMN audit_decisions.replay_of IS 'Set when this answer repeated an earlier decision (identical request under the same call id): that decision''s id';
