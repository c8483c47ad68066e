-- An abandoned call whose message the dialplan played, with no dialer to play it
-- (extensions_dialguard.conf [dialguard-dialer], its fallback: the dialer had died or
-- was stopping). Its message_state, message_started_at and message_delay_ms (240) now
-- come from the dialplan's own record of it (the global DGAM_<channel>), which the next
-- dialer reads, instead of staying NULL.
--
-- Rows from before this file kept no message state for such calls; `campaign status`
-- counted every abandoned call without one as played by the dialplan. They are marked
-- so here, once, and keep that count; from now on an abandoned call without a state
-- and not marked is one whose message nothing recorded (`unknown`).
ALTER TABLE dialer_calls
    ADD COLUMN IF NOT EXISTS message_by_dialplan boolean NOT NULL DEFAULT false;
UPDATE dialer_calls SET message_by_dialplan = true
    WHERE result = 'abandoned' AND message_state IS NULL AND NOT message_by_dialplan;
