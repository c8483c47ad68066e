-- Campaign dialer (ari_app/): campaigns, leads and calls.
-- Owned by the dialer (issue 7); applied by `dialguard db migrate` in file order.
-- Idempotent, so it can also be applied by hand before the runner existed: tables
-- with IF NOT EXISTS, indexes only when missing (CREATE INDEX IF NOT EXISTS still
-- demands ownership of a table another role created).

CREATE TABLE IF NOT EXISTS dialer_campaigns (
    name              text PRIMARY KEY,
    state             text NOT NULL DEFAULT 'draft'
                      CHECK (state IN ('draft', 'approved', 'running', 'paused', 'stopped')),
    approved          boolean NOT NULL DEFAULT false,
    approved_start    timestamptz,
    approved_end      timestamptz,
    rules             text,
    max_concurrent    integer NOT NULL DEFAULT 10 CHECK (max_concurrent > 0),
    calls_per_second  double precision NOT NULL DEFAULT 2 CHECK (calls_per_second > 0),
    dial_ratio        double precision NOT NULL DEFAULT 1.0 CHECK (dial_ratio > 0),
    abandon_limit_pct double precision NOT NULL DEFAULT 3.0 CHECK (abandon_limit_pct >= 0),
    max_attempts      integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    retry_after_s     integer NOT NULL DEFAULT 3600 CHECK (retry_after_s >= 0),
    ring_timeout_s    integer NOT NULL DEFAULT 30 CHECK (ring_timeout_s > 0),
    optout_key        text NOT NULL DEFAULT '9',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- state: pending (waits for next_eligible_at), dialing (a call is in flight),
-- done (success or no more attempts), blocked (DNC / opt-out / invalid: never again).
CREATE TABLE IF NOT EXISTS dialer_leads (
    id                bigserial PRIMARY KEY,
    campaign          text NOT NULL REFERENCES dialer_campaigns(name) ON DELETE CASCADE,
    number            text NOT NULL,               -- E.164
    subject           text NOT NULL DEFAULT '',
    name              text,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'dialing', 'done', 'blocked')),
    attempts          integer NOT NULL DEFAULT 0,
    next_eligible_at  timestamptz NOT NULL DEFAULT now(),
    last_result       text,
    last_reasons      text,
    disposition       text,
    source_line       integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign, number, subject)
);

-- One row per originate, keyed by our own channel id (idempotency: an attempt
-- is never retried under a new id). Written before the originate.
CREATE TABLE IF NOT EXISTS dialer_calls (
    channel_id        text PRIMARY KEY,
    lead_id           bigint NOT NULL REFERENCES dialer_leads(id) ON DELETE CASCADE,
    campaign          text NOT NULL,
    decision_id       text,
    caller_id         text,
    agent             text,
    state             text NOT NULL DEFAULT 'reserved'
                      CHECK (state IN ('reserved', 'originated', 'answered', 'bridged', 'ended')),
    result            text,        -- SPEC §5 outcome once known
    hangup_cause      integer,
    talk_s            integer NOT NULL DEFAULT 0,
    outcome_reported  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    answered_at       timestamptz,
    bridged_at        timestamptz,
    ended_at          timestamptz
);

DO $$
DECLARE
    ix record;
BEGIN
    FOR ix IN SELECT * FROM (VALUES
        ('dialer_leads_due', 'CREATE INDEX dialer_leads_due ON dialer_leads (campaign, next_eligible_at) WHERE state = ''pending'''),
        ('dialer_calls_live', 'CREATE INDEX dialer_calls_live ON dialer_calls (campaign) WHERE state <> ''ended'''),
        ('dialer_calls_unreported', 'CREATE INDEX dialer_calls_unreported ON dialer_calls (channel_id) WHERE state = ''ended'' AND NOT outcome_reported'),
        ('dialer_calls_day', 'CREATE INDEX dialer_calls_day ON dialer_calls (campaign, answered_at)')
    ) AS t(name, ddl) LOOP
        IF to_regclass(ix.name) IS NULL THEN
            EXECUTE ix.ddl;
        END IF;
    END LOOP;
END
$$;
