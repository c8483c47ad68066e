-- dialer_holds.reason `calendar_unknown`: one lead held back because the earliest time
-- it may be called lies in a year a calendar of its rules does not know yet (e.g. the
-- State Council's notice for next year not imported: `dialguard calendar import`).
-- The lead stays `pending` and is looked at again after the dialer's calendar_retry_s;
-- started_at / ended_at: when the wait began, and the next look (extended at each look).
-- Before this file such a lead was closed (`done`) as if it could never be called.
ALTER TABLE dialer_holds DROP CONSTRAINT IF EXISTS dialer_holds_reason_check;
ALTER TABLE dialer_holds ADD CONSTRAINT dialer_holds_reason_check
    CHECK (reason IN ('paused', 'region_paused', 'zone_closed', 'abandon_limit', 'no_message',
                      'calendar_unknown'));
