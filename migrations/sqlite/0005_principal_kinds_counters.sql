-- Grants belong to a principal of a kind (user, group, app, agent); existing grants are users'.
ALTER TABLE grants ADD COLUMN principal_kind TEXT NOT NULL DEFAULT 'user';
DROP INDEX IF EXISTS grants_account;
CREATE UNIQUE INDEX grants_owner_account ON grants (principal_kind, principal, provider, account);
CREATE INDEX grants_owner ON grants (principal_kind, principal, provider);

-- An approval is bound to the exact call the person saw: sha256 over method, canonical URL
-- (with query) and body. Approvals from before carry no hash and can no longer be used.
ALTER TABLE approvals ADD COLUMN call_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN body_preview TEXT;
DROP INDEX IF EXISTS approvals_match;
CREATE INDEX approvals_call ON approvals (principal, grant_id, call_hash, status);

-- Fixed-window counters shared by every process on the database (policy rate limits).
CREATE TABLE counters (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX counters_expiry ON counters (expires_at);

-- An authorization request of our OAuth server is bound to the browser that started it.
ALTER TABLE oauth_requests ADD COLUMN binding TEXT NOT NULL DEFAULT '';
