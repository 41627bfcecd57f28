-- The Alter SDK protocol on /sdk/*: application API keys, and stable UUIDs by which the SDK
-- names grants and agents (MCP keeps the grt_/agt_ ids).

CREATE TABLE api_keys (
    id                      TEXT PRIMARY KEY,        -- a UUID
    name                    TEXT NOT NULL,
    key_prefix              TEXT NOT NULL UNIQUE,    -- first random characters: finds the row
    key_hash                TEXT NOT NULL,           -- sha256 of the whole key
    previous_key_prefix     TEXT UNIQUE,             -- the key before a rotation, accepted until…
    previous_key_hash       TEXT,
    previous_key_expires_at INTEGER,
    scopes                  TEXT NOT NULL,           -- JSON list of key scopes
    status                  TEXT NOT NULL,           -- active | revoked
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    expires_at              INTEGER,
    last_used_at            INTEGER
);

ALTER TABLE grants ADD COLUMN sdk_id TEXT;
CREATE UNIQUE INDEX grants_sdk_id ON grants (sdk_id);
ALTER TABLE agents ADD COLUMN sdk_id TEXT;
CREATE UNIQUE INDEX agents_sdk_id ON agents (sdk_id);

-- A call the SDK sent through /sdk/proxy that a policy held for a person: the vault runs it once
-- when it is approved (the SDK polls the approval, then reads the result). The request is the
-- caller's own (no credential, never the user's token); the result is already scrubbed.
CREATE TABLE held_calls (
    approval_id    TEXT PRIMARY KEY,
    principal_kind TEXT NOT NULL,
    principal      TEXT NOT NULL,
    caller         TEXT NOT NULL,   -- JSON: display name, groups, label
    request        TEXT NOT NULL,   -- JSON: the proxied request
    status         TEXT NOT NULL,   -- held | executing | executed | failed
    result         TEXT,            -- JSON: the provider's (scrubbed) answer
    error          TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

ALTER TABLE connect_sessions ADD COLUMN account_label TEXT;
