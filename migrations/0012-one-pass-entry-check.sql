-- The statement-level check on new entries, in one pass over the statement's rows instead of
-- three: each ledger transaction's legs are grouped once, its own existence is looked up
-- once per transaction rather than once per entry, and each entry's account once. Same
-- guarantees, same messages and error codes, less work on the commit path of every batch.
--
-- Each look-up is a LATERAL subquery with LIMIT 1, which the planner cannot flatten into a
-- join: it stays a primary-key probe per row. As a join, the cached plan could (and did)
-- become a hash join over a sequential scan of all ledger transactions and all accounts,
-- once per batch, a cost that grows with the ledger.
CREATE OR REPLACE FUNCTION new_entries_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT g.transaction_id, g.total, g.legs, g.missing_account, t.id IS NULL AS missing_transaction
    INTO bad
    FROM (SELECT n.transaction_id, sum(n.amount) AS total, count(*) AS legs,
                 min(n.account_id) FILTER (WHERE a.id IS NULL) AS missing_account
            FROM new_entries n
            LEFT JOIN LATERAL (SELECT a.id FROM accounts a WHERE a.id = n.account_id LIMIT 1) a ON true
           GROUP BY n.transaction_id) g
    LEFT JOIN LATERAL (SELECT t.id FROM ledger_transactions t WHERE t.id = g.transaction_id LIMIT 1) t ON true
   WHERE g.total <> 0 OR g.legs < 2 OR g.missing_account IS NOT NULL OR t.id IS NULL
   LIMIT 1;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF bad.total <> 0 OR bad.legs < 2 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance (sum %, % entries)', bad.transaction_id, bad.total, bad.legs
      USING ERRCODE = 'check_violation';
  END IF;
  IF bad.missing_transaction THEN
    RAISE EXCEPTION 'entries refer to ledger transaction %, which does not exist', bad.transaction_id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RAISE EXCEPTION 'entries refer to account %, which does not exist', bad.missing_account
    USING ERRCODE = 'foreign_key_violation';
END;
$$;
