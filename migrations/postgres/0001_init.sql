-- vault-mcp schema for PostgreSQL: the same tables as the SQLite migrations 0001-0005, in one
-- step (there are no older PostgreSQL vaults to upgrade). Times are unix seconds unless the
-- column says _ms. JSON columns are JSONB.

CREATE TABLE vault_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE grants (
    id                  TEXT PRIMARY KEY,
    principal_kind      TEXT NOT NULL DEFAULT 'user',
    principal           TEXT NOT NULL,
    provider            TEXT NOT NULL,
    kind                TEXT NOT NULL,
    account             TEXT NOT NULL,
    account_display     TEXT,
    scopes              TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL,
    scope_mismatch      TEXT,
    injection           TEXT,
    hosts               JSONB,
    key_id              TEXT NOT NULL,
    sealed              TEXT NOT NULL,
    token_expires_at    BIGINT,
    grant_expires_at    BIGINT,
    version             BIGINT NOT NULL DEFAULT 1,
    refresh_lease_owner TEXT,
    refresh_lease_until BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    last_used_at        BIGINT
);
CREATE UNIQUE INDEX grants_owner_account ON grants (principal_kind, principal, provider, account);
CREATE INDEX grants_owner ON grants (principal_kind, principal, provider);
CREATE INDEX grants_provider ON grants (provider);

-- Every instance caches warm grants; a change anywhere (a new version, a deleted row) is announced
-- on the `vault_grants` channel with the grant id, and every instance forgets it at once.
CREATE FUNCTION vault_grant_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vault_grants', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER grants_changed AFTER INSERT OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION vault_grant_changed();
CREATE TRIGGER grants_version_changed AFTER UPDATE ON grants
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION vault_grant_changed();

CREATE TABLE connect_sessions (
    id              TEXT PRIMARY KEY,
    public_id       TEXT NOT NULL UNIQUE,
    principal       TEXT NOT NULL,
    providers       JSONB NOT NULL,
    scopes          JSONB NOT NULL,
    repair_grant_id TEXT,
    return_url      TEXT,
    status          TEXT NOT NULL,
    error           TEXT,
    result_grants   JSONB NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    completed_at    BIGINT
);
CREATE INDEX connect_sessions_principal ON connect_sessions (principal, created_at);

CREATE TABLE connect_attempts (
    state_hash   TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES connect_sessions (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    sealed       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    id         TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL,
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
    status     BIGINT,
    latency_ms BIGINT,
    outcome    TEXT NOT NULL,
    decision   TEXT,
    reason     TEXT,
    detail     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_principal_ts ON audit_log (principal, ts_ms);
CREATE INDEX audit_provider_ts ON audit_log (provider, ts_ms);
CREATE INDEX audit_grant_ts ON audit_log (grant_id, ts_ms);
CREATE INDEX audit_ts ON audit_log (ts_ms);

-- The newest link of the audit chain. Writers on every instance lock this one row, so the
-- chain stays one line however many instances append.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE oauth_clients (
    client_id          TEXT PRIMARY KEY,
    secret_hash        TEXT,
    client_name        TEXT,
    redirect_uris      JSONB NOT NULL,
    metadata           TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

CREATE TABLE oauth_requests (
    id                 TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    redirect_uri       TEXT NOT NULL,
    state              TEXT,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    code_challenge     TEXT NOT NULL,
    binding            TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL
);

CREATE TABLE oauth_codes (
    code_hash          TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL,
    redirect_uri       TEXT NOT NULL,
    code_challenge     TEXT NOT NULL,
    principal          TEXT NOT NULL,
    principal_display  TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    used_at            BIGINT
);

CREATE TABLE oauth_tokens (
    token_hash         TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,
    family             TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    principal          TEXT NOT NULL,
    principal_display  TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    revoked_at         BIGINT
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family);

CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    principal   TEXT NOT NULL,
    grant_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    method      TEXT NOT NULL,
    host        TEXT NOT NULL,
    path        TEXT NOT NULL,
    call_hash   TEXT NOT NULL,
    body_preview TEXT,
    reason      TEXT,
    rule        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT
);
CREATE INDEX approvals_call ON approvals (principal, grant_id, call_hash, status);

CREATE TABLE counters (
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX counters_expiry ON counters (expires_at);
