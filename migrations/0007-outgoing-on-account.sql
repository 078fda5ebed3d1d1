-- The daily outgoing counter moves onto the account row. A batch reads accounts with
-- SELECT … FOR UPDATE, which always returns the newest committed row; a separate table read
-- in the same statement is seen as of the statement's start, before the lock was granted, so
-- a batch that waited for another could miss that batch's spending and let a wallet pass
-- its limit. On the account row, the counter is as fresh as the balance it limits.
ALTER TABLE accounts
  ADD COLUMN outgoing_day date,
  ADD COLUMN outgoing_amount bigint NOT NULL DEFAULT 0 CHECK (outgoing_amount >= 0);

UPDATE accounts a SET outgoing_day = d.day, outgoing_amount = d.amount
  FROM (SELECT DISTINCT ON (account_id) account_id, day, amount FROM daily_outgoing ORDER BY account_id, day DESC) d
 WHERE a.id = d.account_id;

DROP TABLE daily_outgoing;
