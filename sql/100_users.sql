-- Users, roles, API tokens and console sessions (issue 15; docs/WEB.md).
-- Applied by `dialguard db migrate` as dialguard_admin, over 010..090.
--
-- State, not audit. Least privilege: the service (dialguard_writer: the web
-- console and the API) may read users and tokens and note a token's last use,
-- and keeps its own sessions; it may not create a user, change a role or a
-- password, or mint a token. Those are `dialguard user ...`, run with
-- DIALGUARD_PG_ADMIN_DSN (a login of dialguard_admin), like migrations.
--
-- Secrets at rest: password_hash is an argon2id PHC string (argon2-cffi);
-- a token and a session id are stored only as the SHA-256 of their random
-- secret (256 bits: a slow hash adds nothing to a secret nobody chose).

CREATE TABLE web_users (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    role          text NOT NULL CHECK (role IN ('viewer', 'supervisor', 'compliance', 'admin')),
    password_hash text,                          -- argon2id; NULL: no password login (tokens only)
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- An API token acts for its user with at most the user's role (the smaller
-- of the two when used: a token never outranks its user).
CREATE TABLE web_tokens (
    id            text PRIMARY KEY,              -- public part of the token (dgt_<id>_<secret>)
    user_name     text NOT NULL REFERENCES web_users(name) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('viewer', 'supervisor', 'compliance', 'admin')),
    secret_sha256 text NOT NULL,
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX web_tokens_user ON web_tokens (user_name);

CREATE TABLE web_sessions (
    id_sha256     text PRIMARY KEY,              -- SHA-256 of the cookie's session id
    user_name     text NOT NULL REFERENCES web_users(name) ON DELETE CASCADE,
    csrf          text NOT NULL,                 -- per-session CSRF token (in forms, never in a cookie)
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Every change to users and tokens, append-only like every audit table (010):
-- who (the OS user of `dialguard user`, cli:<name>; later web:<admin>), what, to whom.
CREATE TABLE audit_user_changes (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL CHECK (action IN ('user_add', 'passwd', 'role', 'disable', 'enable',
                                                  'token_add', 'token_revoke')),
    user_name     text NOT NULL,
    role          text,                          -- the new role (user_add, role, token_add)
    token_id      text,                          -- token_add, token_revoke
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_user_changes_user ON audit_user_changes (user_name, at);
CREATE TRIGGER audit_user_changes_append_only BEFORE UPDATE OR DELETE ON audit_user_changes
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_user_changes_no_truncate BEFORE TRUNCATE ON audit_user_changes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
REVOKE ALL ON audit_user_changes FROM PUBLIC;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_user_changes FROM dialguard_writer;
GRANT SELECT ON audit_user_changes TO dialguard_writer, dialguard_reader;

-- The default privileges of 010 grant the writer everything on new tables: narrow them.
REVOKE ALL ON web_users, web_tokens, web_sessions FROM PUBLIC;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON web_users, web_tokens FROM dialguard_writer;
GRANT SELECT ON web_users TO dialguard_writer;
GRANT SELECT, UPDATE (last_used_at) ON web_tokens TO dialguard_writer;
REVOKE TRUNCATE ON web_sessions FROM dialguard_writer;
GRANT SELECT, INSERT, DELETE ON web_sessions TO dialguard_writer;
REVOKE UPDATE ON web_sessions FROM dialguard_writer;
-- Readers (reports) see neither hashes nor sessions.
REVOKE ALL ON web_users, web_tokens, web_sessions FROM dialguard_reader;

COMMENT ON TABLE web_users IS 'Console and API users: role viewer < supervisor < compliance < admin; argon2id password hash';
COMMENT ON TABLE web_tokens IS 'API tokens for machines: SHA-256 of the secret only, scoped to a role no higher than the user''s';
COMMENT ON TABLE audit_user_changes IS 'Append-only: every user and token change, with the OS or console identity that made it';
COMMENT ON TABLE web_sessions IS 'Console sessions: SHA-256 of the cookie id, CSRF token, expiry';
