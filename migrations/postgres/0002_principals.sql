-- Principals for teams (the same as SQLite's 0006): agents, delegations, grant lifetimes from
-- Connect, and who-did-what in the audit trail.

CREATE TABLE agents (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    description             TEXT,
    key_prefix              TEXT UNIQUE,
    key_hash                TEXT,
    previous_key_hash       TEXT,
    previous_key_expires_at BIGINT,
    previous_key_prefix     TEXT,
    key_id                  TEXT,
    sealed                  TEXT,
    jwt_subject             TEXT UNIQUE,
    access                  JSONB NOT NULL DEFAULT '{}',
    idempotency_key         TEXT UNIQUE,
    status                  TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    last_used_at            BIGINT
);

CREATE TABLE delegations (
    grant_id     TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    delegated_by TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (grant_id, agent_id)
);
CREATE INDEX delegations_agent ON delegations (agent_id);

ALTER TABLE grants ADD COLUMN ttl_secs BIGINT;

ALTER TABLE connect_sessions ADD COLUMN delegate_agent TEXT;
ALTER TABLE connect_sessions ADD COLUMN grant_ttl_secs BIGINT;
ALTER TABLE connect_attempts ADD COLUMN delegate_agent TEXT;

ALTER TABLE audit_log ADD COLUMN principal_kind TEXT;
ALTER TABLE audit_log ADD COLUMN grant_owner TEXT;
ALTER TABLE audit_log ADD COLUMN delegation TEXT;
ALTER TABLE audit_log ADD COLUMN context TEXT;
