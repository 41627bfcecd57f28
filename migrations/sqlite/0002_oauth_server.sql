-- vault-mcp as an OAuth authorization server for MCP clients (hosted `oauth` identity mode).
-- Secrets (client secrets, codes, tokens) are stored as SHA-256 hashes only.

-- RFC 7591 dynamically registered clients.
CREATE TABLE oauth_clients (
    client_id          TEXT PRIMARY KEY,
    secret_hash        TEXT,                  -- NULL for public clients (PKCE only)
    client_name        TEXT,
    redirect_uris      TEXT NOT NULL,         -- JSON list
    metadata           TEXT NOT NULL,         -- JSON of the registration as accepted
    created_at         INTEGER NOT NULL
);

-- An /authorize request waiting for the user to sign in and consent.
CREATE TABLE oauth_requests (
    id                 TEXT PRIMARY KEY,      -- sha256 of the id handed to the browser
    client_id          TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    redirect_uri       TEXT NOT NULL,
    state              TEXT,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    code_challenge     TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL
);

-- Authorization codes (single use).
CREATE TABLE oauth_codes (
    code_hash          TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL,
    redirect_uri       TEXT NOT NULL,
    code_challenge     TEXT NOT NULL,
    principal          TEXT NOT NULL,
    principal_display  TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    used_at            INTEGER
);

-- Access and refresh tokens. A refresh rotation keeps the family; reusing a rotated refresh
-- token revokes the whole family.
CREATE TABLE oauth_tokens (
    token_hash         TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,         -- access | refresh
    family             TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    principal          TEXT NOT NULL,
    principal_display  TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    revoked_at         INTEGER
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family);
