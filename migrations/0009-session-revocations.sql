-- Every process keeps the set of recently revoked sessions in memory and asks only for
-- revocations newer than the last it saw, once a second.
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
