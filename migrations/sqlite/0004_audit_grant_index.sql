-- Searches by grant read newest-first within a time range, like those by user and provider.
DROP INDEX IF EXISTS audit_grant;
CREATE INDEX audit_grant_ts ON audit_log (grant_id, ts_ms);
