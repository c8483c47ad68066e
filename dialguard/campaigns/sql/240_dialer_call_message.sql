-- What became of the message a dialer call owed its callee, for the regulator: the
-- abandon message (no agent in time) or an answering machine's (amd_action message).
-- 47 CFR 64.1200(a)(7)(i)(A) wants an abandoned call's message to begin within 2 s of
-- the callee's greeting; Ofcom's abandoned-call rules want an information message.
--
-- dialer_calls.message_state: NULL no message was due (or the dialplan played it while
--   no dialer ran: extensions_dialguard.conf [dialguard-dialer]); `started`: playing;
--   `played` to its end; `cut`: the callee hung up during it; `failed`: Asterisk could
--   not play it to a callee still on the line (a missing file...); `none`: the callee
--   was gone before it began.
-- dialer_calls.message_started_at: when Asterisk began playing it (its PlaybackStarted).
-- dialer_calls.message_delay_ms: from the answer (the call's first StasisStart) to that
--   start, both on Asterisk's clock.
ALTER TABLE dialer_calls
    ADD COLUMN IF NOT EXISTS message_state text
        CHECK (message_state IN ('started', 'played', 'cut', 'failed', 'none')),
    ADD COLUMN IF NOT EXISTS message_started_at timestamptz,
    ADD COLUMN IF NOT EXISTS message_delay_ms integer CHECK (message_delay_ms >= 0);
