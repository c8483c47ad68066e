-- Four eyes (issue 15, point 4): an override or a campaign is first a request,
-- and takes effect only when a different user approves it (dialguard/approvals.py).
-- Applied by `dialguard db migrate` as dialguard_admin, over 010..100.
--
-- One row per request, kept for ever (no DELETE for the service): who asked
-- (requested_user, the authenticated user name; requested_by, the audit actor
-- web:<user> or token:<id>:<user>), what (subject, jsonb), why, and who decided.
-- The rule "the approver is not the requester" is checked by the code and
-- again here, on the user name (the same person through the console and
-- through a token is one person).
--
-- No plaintext number at rest: an override request holds the number's keyed
-- hash (number_hash, as audit_decisions) and the number sealed with
-- DIALGUARD_DATA_KEY (number_enc), which the approval opens to grant.

CREATE TABLE approval_requests (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('override', 'campaign')),
    subject         jsonb NOT NULL,                 -- override: campaign, lifts, hours; campaign: name, purpose, ...
    number_hash     text,                           -- override only
    number_enc      text,                           -- override only, sealed
    why             text NOT NULL CHECK (length(why) BETWEEN 1 AND 1000),
    requested_user  text NOT NULL,
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_user    text,
    decided_by      text,
    decided_at      timestamptz,
    decision_note   text NOT NULL DEFAULT '',
    result          jsonb NOT NULL DEFAULT '{}',    -- the grant id and its expiry, the campaign's dates
    CHECK ((kind = 'override') = (number_hash IS NOT NULL AND number_enc IS NOT NULL)),
    CHECK ((status = 'pending') = (decided_user IS NULL)),
    CONSTRAINT four_eyes CHECK (decided_user IS NULL OR decided_user <> requested_user)
);
CREATE INDEX approval_requests_pending ON approval_requests (kind, requested_at) WHERE status = 'pending';

REVOKE ALL ON approval_requests FROM PUBLIC;
REVOKE DELETE, TRUNCATE, UPDATE ON approval_requests FROM dialguard_writer;
GRANT SELECT, INSERT ON approval_requests TO dialguard_writer;
GRANT UPDATE (status, decided_user, decided_by, decided_at, decision_note, result) ON approval_requests
    TO dialguard_writer;
GRANT USAGE ON SEQUENCE approval_requests_id_seq TO dialguard_writer;
GRANT SELECT ON approval_requests TO dialguard_reader;

-- A decided request stays decided: nobody re-opens or re-decides it.
CREATE FUNCTION approval_requests_decided_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'approval request % is already %', OLD.id, OLD.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER approval_requests_decided_once BEFORE UPDATE ON approval_requests
    FOR EACH ROW EXECUTE FUNCTION approval_requests_decided_once();

COMMENT ON TABLE approval_requests IS 'Four eyes: override and campaign requests, approved or rejected by a different user';
