-- vault-mcp schema v1 (SQLite). Times are unix seconds unless the column says _ms.

CREATE TABLE vault_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A grant: one principal's authorization to use one provider account, with its sealed credential.
CREATE TABLE grants (
    id                  TEXT PRIMARY KEY,
    principal           TEXT NOT NULL,
    provider            TEXT NOT NULL,
    kind                TEXT NOT NULL,             -- oauth | secret
    account             TEXT NOT NULL,             -- account identifier (login, email) or secret label
    account_display     TEXT,
    scopes              TEXT NOT NULL DEFAULT '',  -- granted scopes, space separated
    status              TEXT NOT NULL,             -- active | credential_revoked | revoked
    scope_mismatch      TEXT,                      -- scopes the provider said were missing, space separated
    injection           TEXT,                      -- JSON injection override (managed secrets)
    hosts               TEXT,                      -- JSON host allowlist override (managed secrets)
    key_id              TEXT NOT NULL,
    sealed              TEXT NOT NULL,
    token_expires_at    INTEGER,
    grant_expires_at    INTEGER,
    version             INTEGER NOT NULL DEFAULT 1,
    refresh_lease_owner TEXT,
    refresh_lease_until INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_used_at        INTEGER
);
CREATE UNIQUE INDEX grants_account ON grants (principal, provider, account);
CREATE INDEX grants_provider ON grants (provider);

-- A Connect session: the link handed to a user to authorize one or more providers.
CREATE TABLE connect_sessions (
    id              TEXT PRIMARY KEY,      -- sha256 of the link token (the token itself is never stored)
    public_id       TEXT NOT NULL UNIQUE,  -- short id safe to show and log
    principal       TEXT NOT NULL,
    providers       TEXT NOT NULL,         -- JSON list of provider ids
    scopes          TEXT NOT NULL,         -- JSON object provider -> [scopes]
    repair_grant_id TEXT,
    return_url      TEXT,
    status          TEXT NOT NULL,         -- pending | completed | denied | expired | error
    error           TEXT,
    result_grants   TEXT NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX connect_sessions_principal ON connect_sessions (principal, created_at);

-- One authorization round trip to a provider (its OAuth `state`), bound to a session.
CREATE TABLE connect_attempts (
    state_hash   TEXT PRIMARY KEY,         -- sha256 of the state value
    session_id   TEXT NOT NULL REFERENCES connect_sessions (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    sealed       TEXT NOT NULL,            -- sealed PKCE verifier
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);

-- Hash-chained audit trail: hash = sha256(prev_hash || canonical record).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    event      TEXT NOT NULL,
    principal  TEXT NOT NULL,
    agent      TEXT,
    client     TEXT,
    tool       TEXT,
    grant_id   TEXT,
    provider   TEXT,
    method     TEXT,
    host       TEXT,
    path       TEXT,
    status     INTEGER,
    latency_ms INTEGER,
    outcome    TEXT NOT NULL,
    decision   TEXT,
    reason     TEXT,
    detail     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_principal_ts ON audit_log (principal, ts_ms);
CREATE INDEX audit_provider_ts ON audit_log (provider, ts_ms);
CREATE INDEX audit_grant ON audit_log (grant_id);
CREATE INDEX audit_ts ON audit_log (ts_ms);
