-- One-time approvals for calls a policy marks `approve`, when the client cannot ask the user
-- itself (no elicitation): the call is refused with an approval id and link; once a person
-- approves it (CLI or page), the same call by the same user on the same grant goes through once.
CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,          -- apr_..., shown to users
    token_hash  TEXT NOT NULL UNIQUE,      -- sha256 of the approval link token
    principal   TEXT NOT NULL,
    grant_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    method      TEXT NOT NULL,
    host        TEXT NOT NULL,
    path        TEXT NOT NULL,
    reason      TEXT,
    rule        TEXT NOT NULL,
    status      TEXT NOT NULL,             -- pending | approved | denied | used
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    decided_at  INTEGER,
    decided_by  TEXT
);
CREATE INDEX approvals_match ON approvals (principal, grant_id, method, host, path, status);
