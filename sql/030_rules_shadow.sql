-- Rules versions and shadow verdicts in the audit (docs/AUDIT.md, "Rules
-- versions and shadow rules"). Applied by `dialguard db migrate` as
-- dialguard_admin, over 010 (and whatever came after it).

-- Every `dialguard rules apply` (active or shadow) and shadow switch-off: the
-- full rules text, who, why. Stream records t=rules.
CREATE TABLE audit_rules_versions (
    record_id     text PRIMARY KEY,              -- the record's own id (idempotency)
    stream_id     text NOT NULL,
    version       integer,                       -- rules version number (NULL only for shadow_off without one)
    mode          text NOT NULL CHECK (mode IN ('active', 'shadow', 'shadow_off')),
    hash          text,                          -- content hash of the rules
    name          text,                          -- packs name, e.g. cn-default+cn-carrier
    spec          text,                          -- what was applied, as given
    files         jsonb NOT NULL DEFAULT '[]',   -- [{"ref": ..., "text": YAML}]
    actor         text,
    why           text,
    at            timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now(),
    node          text,
    payload       jsonb NOT NULL
);
CREATE INDEX audit_rules_versions_version ON audit_rules_versions (version, at);

-- Append-only like every audit table (010): no UPDATE/DELETE/TRUNCATE for the
-- writer (the default privileges of 010 would grant them), and the trigger.
REVOKE ALL ON audit_rules_versions FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_rules_versions FROM dialguard_writer;
GRANT SELECT, INSERT ON audit_rules_versions TO dialguard_writer;
GRANT SELECT ON audit_rules_versions TO dialguard_reader;
CREATE TRIGGER audit_rules_versions_append_only BEFORE UPDATE OR DELETE ON audit_rules_versions
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_rules_versions_no_truncate BEFORE TRUNCATE ON audit_rules_versions
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Per decision: the rules version it was decided under, the shadow verdict,
-- what an override lifted. NULL on rows shipped before, or without a shadow.
ALTER TABLE audit_decisions
    ADD COLUMN rules_seq integer,                -- active rules version (field rver); NULL: node's config rules
    ADD COLUMN shadow_version integer,           -- shadow rules version (sv); NULL: no shadow
    ADD COLUMN shadow_allowed boolean,           -- shadow verdict (sa)
    ADD COLUMN shadow_reasons text[],            -- shadow reasons, SPEC order (sr)
    ADD COLUMN override_lifted text[];           -- reasons the override lifted (ovr)
CREATE INDEX audit_decisions_shadow_at ON audit_decisions (decided_at) WHERE shadow_version IS NOT NULL;

-- Rejects are kept once per entry: the shipper inserts a reject only when the
-- same (stream_id, fields) is not there yet (a spool file or batch shipped twice).
CREATE INDEX audit_rejects_stream ON audit_rejects (stream_id);

COMMENT ON TABLE audit_rules_versions IS 'Every rules version applied (active or shadow) and shadow switch-off: full text, actor, reason';
COMMENT ON COLUMN audit_decisions.rules_seq IS 'Active rules version number (dialguard rules apply); NULL when the node ran the rules of its config';
COMMENT ON COLUMN audit_decisions.shadow_version IS 'Shadow rules version evaluated alongside; NULL when none';
COMMENT ON COLUMN audit_decisions.shadow_allowed IS 'Verdict the shadow rules would have given';
COMMENT ON COLUMN audit_decisions.shadow_reasons IS 'Reasons the shadow rules would have denied for (SPEC order)';
COMMENT ON COLUMN audit_decisions.override_lifted IS 'Reasons the override (override_id) lifted';
