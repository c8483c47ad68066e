-- Audit trail (issue 5; docs/AUDIT.md). Applied by `dialguard db migrate`, which
-- runs every file as the NOLOGIN role dialguard_admin (owner of every object)
-- after creating the roles dialguard_admin, dialguard_writer and dialguard_reader.
--
-- Every audit_* table is append-only: dialguard_writer (the service) may INSERT
-- and SELECT, never UPDATE or DELETE (grants), and a trigger refuses UPDATE,
-- DELETE and TRUNCATE for everyone, the owner included. The only way out is an
-- explicit retention purge by an admin (docs/AUDIT.md, "Retention").
--
-- Numbers at rest: number_hash is the keyed hash also used in Redis keys (for
-- joins); number_enc is the E.164 sealed with AES-GCM by the application key
-- (DIALGUARD_DATA_KEY), stored as the engine sealed it. No plaintext number.
--
-- Every row comes from one Redis stream entry: stream_id is that entry's id and
-- recorded_at its time (Redis clock at the atomic step); shipped_at is when it
-- reached PostgreSQL. Idempotency: each table's primary key is the record's own
-- id, and the shipper inserts ON CONFLICT DO NOTHING.

-- One row per decision, allowed or denied.
CREATE TABLE audit_decisions (
    decision_id          text PRIMARY KEY,
    stream_id            text NOT NULL,
    decided_at           timestamptz NOT NULL,   -- the decision's clock ("now" of the request)
    recorded_at          timestamptz NOT NULL,   -- Redis time of the atomic check-and-reserve
    shipped_at           timestamptz NOT NULL DEFAULT now(),
    allowed              boolean NOT NULL,
    reasons              text[] NOT NULL DEFAULT '{}',   -- SPEC §2 order, every failing reason
    pre_reasons          text[] NOT NULL DEFAULT '{}',   -- found before Redis (number, hours, holiday)
    number_hash          text NOT NULL,
    number_enc           text,                   -- NULL when the number was invalid
    campaign             text NOT NULL,
    agent                text NOT NULL,
    subject              text,
    call_id              text,
    caller_id_requested  text,                   -- as the request gave it (business number)
    caller_id_hash       text,                   -- caller ID presented (keyed hash), NULL on deny
    rules                text,                   -- rule packs, e.g. cn-default+cn-carrier
    rules_version        text,                   -- hash of the packs' content
    node                 text,
    latency_ms           real,                   -- request start -> atomic step, when the engine sends it
    counters             jsonb,                  -- counters seen by the script, when the engine sends them
    override_id          text,                   -- set when an override turned a deny into an allow
    request              jsonb NOT NULL          -- the record as the engine wrote it
);
CREATE INDEX audit_decisions_at ON audit_decisions (decided_at);
CREATE INDEX audit_decisions_campaign_at ON audit_decisions (campaign, decided_at);
CREATE INDEX audit_decisions_number_at ON audit_decisions (number_hash, decided_at);
CREATE INDEX audit_decisions_cid_at ON audit_decisions (caller_id_hash, decided_at) WHERE caller_id_hash IS NOT NULL;
CREATE INDEX audit_decisions_call ON audit_decisions (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX audit_decisions_recorded ON audit_decisions (recorded_at);

-- Call outcomes, as reported (one per report; a conversation covering another
-- subject is a second report for the same decision).
CREATE TABLE audit_outcomes (
    outcome_id    text PRIMARY KEY,
    stream_id     text NOT NULL,
    decision_id   text,                          -- NULL when the call id was unknown to the guard
    call_id       text,
    result        text NOT NULL,
    talk_s        integer,
    hangup_cause  integer,
    subject       text,
    reported_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now(),
    node          text,
    payload       jsonb NOT NULL
);
CREATE INDEX audit_outcomes_decision ON audit_outcomes (decision_id);
CREATE INDEX audit_outcomes_recorded ON audit_outcomes (recorded_at);

-- Per-number facts: opt-out, complaint, consent (and its withdrawal), DNC.
CREATE TABLE audit_events (
    event_id      text PRIMARY KEY,
    stream_id     text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('opt_out', 'complaint', 'consent', 'consent_revoke',
                                                'dnc_add', 'dnc_remove')),
    number_hash   text NOT NULL,
    number_enc    text,
    campaign      text,                          -- campaign DNC; NULL = global
    at            timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now(),
    node          text,
    payload       jsonb NOT NULL
);
CREATE INDEX audit_events_number ON audit_events (number_hash, at);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at);
CREATE VIEW audit_opt_outs AS SELECT * FROM audit_events WHERE kind = 'opt_out';
CREATE VIEW audit_complaints AS SELECT * FROM audit_events WHERE kind = 'complaint';
CREATE VIEW audit_consent AS SELECT * FROM audit_events WHERE kind IN ('consent', 'consent_revoke');
CREATE VIEW audit_dnc_changes AS SELECT * FROM audit_events WHERE kind IN ('dnc_add', 'dnc_remove');

-- Overrides: an admin-granted, one-time exception (SPEC §2): who, why, for what.
CREATE TABLE audit_overrides (
    override_id   text PRIMARY KEY,
    stream_id     text NOT NULL,
    decision_id   text,                          -- the decision it turned into an allow, once used
    number_hash   text,
    number_enc    text,
    campaign      text,
    lifted        text[] NOT NULL DEFAULT '{}',  -- reasons it may lift
    granted_by    text NOT NULL,
    why           text NOT NULL,
    at            timestamptz NOT NULL,
    expires_at    timestamptz,
    recorded_at   timestamptz NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now(),
    node          text,
    payload       jsonb NOT NULL
);
CREATE INDEX audit_overrides_number ON audit_overrides (number_hash, at);

-- Administrative changes (kill switches, campaign approval, caller IDs): who, what, why.
CREATE TABLE audit_admin_actions (
    action_id     text PRIMARY KEY,
    stream_id     text NOT NULL,
    action        text NOT NULL,
    actor         text,
    target        text,
    why           text,
    at            timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now(),
    node          text,
    payload       jsonb NOT NULL
);
CREATE INDEX audit_admin_actions_at ON audit_admin_actions (at);

-- Names behind the tags used in Redis keys, for reports and rebuilds.
CREATE TABLE audit_campaigns (
    name           text PRIMARY KEY,
    tag            text NOT NULL,               -- dialguard.numbers.short_hash(name)
    first_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE audit_caller_ids (
    tag            text PRIMARY KEY,            -- keyed hash, as in caller_id_hash
    number_enc     text NOT NULL,               -- sealed E.164
    first_seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Stream entries the shipper could not read as a record: kept raw, never dropped.
CREATE TABLE audit_rejects (
    id           bigserial PRIMARY KEY,
    stream_id    text NOT NULL,
    fields       jsonb NOT NULL,
    error        text NOT NULL,
    shipped_at   timestamptz NOT NULL DEFAULT now()
);

-- Append-only, enforced for every role (owner and superusers included, as long
-- as triggers are enabled). DELETE and TRUNCATE pass only for a member of
-- dialguard_admin that set dialguard.audit_purge = 'on' in its transaction
-- (retention purge); UPDATE never passes.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'TRUNCATE')
       AND coalesce(current_setting('dialguard.audit_purge', true), '') = 'on'
       AND pg_has_role(current_user, 'dialguard_admin', 'MEMBER') THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'dialguard: % on % refused: audit tables are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_decisions', 'audit_outcomes', 'audit_events', 'audit_overrides',
                             'audit_admin_actions', 'audit_campaigns', 'audit_caller_ids', 'audit_rejects']
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW '
                       'EXECUTE FUNCTION audit_append_only()', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                       'EXECUTE FUNCTION audit_append_only()', t || '_no_truncate', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT ON %I TO dialguard_writer', t);
        EXECUTE format('GRANT SELECT ON %I TO dialguard_reader', t);
    END LOOP;
END
$$;
REVOKE ALL ON audit_opt_outs, audit_complaints, audit_consent, audit_dnc_changes FROM PUBLIC;
GRANT SELECT ON audit_opt_outs, audit_complaints, audit_consent, audit_dnc_changes
    TO dialguard_writer, dialguard_reader;
GRANT USAGE ON SEQUENCE audit_rejects_id_seq TO dialguard_writer;

-- Tables that later files create (the dialer's working tables, for instance)
-- are ordinary state, not audit: the service may change them. A later audit
-- table must REVOKE UPDATE, DELETE, TRUNCATE from dialguard_writer and add the
-- trigger, as above.
ALTER DEFAULT PRIVILEGES FOR ROLE dialguard_admin IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO dialguard_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE dialguard_admin IN SCHEMA public
    GRANT SELECT ON TABLES TO dialguard_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE dialguard_admin IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO dialguard_writer;
