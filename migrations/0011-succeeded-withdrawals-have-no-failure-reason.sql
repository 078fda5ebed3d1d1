-- Settling a withdrawal stored the caller's would-be failure reason even when the bank paid
-- out. A succeeded withdrawal has no failure reason; clear the ones written before the fix.
UPDATE withdrawals SET failure_reason = NULL WHERE status = 'succeeded' AND failure_reason IS NOT NULL;
