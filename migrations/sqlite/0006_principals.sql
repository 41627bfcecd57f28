-- Principals for teams: named agents with their own keys, delegations of grants to agents,
-- grant lifetimes from Connect, and who-did-what in the audit trail.

CREATE TABLE agents (
    id                      TEXT PRIMARY KEY,        -- agt_…
    name                    TEXT NOT NULL UNIQUE,
    description             TEXT,
    key_prefix              TEXT UNIQUE,             -- the key's first random characters: finds the row
    key_hash                TEXT,                    -- sha256 of the whole key (the key itself is never stored)
    previous_key_hash       TEXT,                    -- the key before a rotation, valid until…
    previous_key_expires_at INTEGER,
    previous_key_prefix     TEXT,
    key_id                  TEXT,                    -- master key sealing the HMAC signing keys
    sealed                  TEXT,                    -- sealed {current, previous} request-signing keys derived from the API keys
    jwt_subject             TEXT UNIQUE,             -- client-credentials `client_id`/`sub` mapped to this agent
    access                  TEXT NOT NULL DEFAULT '{}', -- JSON {"grants": [...], "scopes": {"provider": [...]}}
    idempotency_key         TEXT UNIQUE,
    status                  TEXT NOT NULL,           -- active | disabled
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    last_used_at            INTEGER
);

CREATE TABLE delegations (
    grant_id     TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    delegated_by TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (grant_id, agent_id)
);
CREATE INDEX delegations_agent ON delegations (agent_id);

ALTER TABLE grants ADD COLUMN ttl_secs INTEGER;

ALTER TABLE connect_sessions ADD COLUMN delegate_agent TEXT;
ALTER TABLE connect_sessions ADD COLUMN grant_ttl_secs INTEGER;
ALTER TABLE connect_attempts ADD COLUMN delegate_agent TEXT;

ALTER TABLE audit_log ADD COLUMN principal_kind TEXT;
ALTER TABLE audit_log ADD COLUMN grant_owner TEXT;
ALTER TABLE audit_log ADD COLUMN delegation TEXT;
ALTER TABLE audit_log ADD COLUMN context TEXT;
