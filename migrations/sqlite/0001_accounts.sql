-- Accounts, sessions, audit trail and settings (SQLite dialect; paired with
-- ../postgres/0001_accounts.sql). Timestamps are RFC 3339 text in UTC.

CREATE TABLE groups (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    hashed_password      TEXT NOT NULL,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    status               TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    group_id             INTEGER REFERENCES groups (id) ON DELETE RESTRICT,
    first_name           TEXT,
    last_name            TEXT,
    -- email and names folded (lower case, no accents) for ?q= searches
    search_text          TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    password_changed_at  TEXT NOT NULL,
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    locked_until         TEXT
);
CREATE INDEX users_group_id ON users (group_id);

CREATE TABLE user_sessions (
    id            TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoke_reason TEXT,
    ip            TEXT,
    user_agent    TEXT,
    refresh_jti   TEXT NOT NULL,
    csrf_hash     TEXT NOT NULL
);
CREATE INDEX user_sessions_user_id ON user_sessions (user_id);

CREATE TABLE audit_logs (
    id             INTEGER PRIMARY KEY,
    at             TEXT NOT NULL,
    user_id        INTEGER REFERENCES users (id) ON DELETE SET NULL,
    actor_email    TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT,
    resource_id    TEXT,
    outcome        TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    ip             TEXT,
    details        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_at ON audit_logs (at);
CREATE INDEX audit_logs_user_id_at ON audit_logs (user_id, at);
CREATE INDEX audit_logs_action_at ON audit_logs (action, at);

-- The audit trail is append-only. The only change allowed is the one the foreign key
-- makes when a user is deleted: user_id becomes NULL, actor_email stays.
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
WHEN NEW.user_id IS NOT NULL
  OR NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at OR NEW.actor_email IS NOT OLD.actor_email
  OR NEW.action IS NOT OLD.action OR NEW.resource_type IS NOT OLD.resource_type
  OR NEW.resource_id IS NOT OLD.resource_id OR NEW.outcome IS NOT OLD.outcome
  OR NEW.ip IS NOT OLD.ip OR NEW.details IS NOT OLD.details
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;

-- Failed logins, counted per account key and per client IP for throttling. Shared by
-- every node on the database; rows older than the window are pruned.
CREATE TABLE login_failures (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    email  TEXT NOT NULL,
    ip     TEXT
);
CREATE INDEX login_failures_email_at ON login_failures (email, at);
CREATE INDEX login_failures_ip_at ON login_failures (ip, at);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
