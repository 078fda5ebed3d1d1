-- When recovery last asked the gateway about an attempt, so that abandoned attempts are
-- asked about at most hourly instead of on every recovery pass.
ALTER TABLE payments ADD COLUMN gateway_checked_at timestamptz;
