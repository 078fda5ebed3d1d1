-- Fewer locks and lookups per transfer, with the same guarantees.
--
-- 1. PIN attempts are counted on the wallet's account row. A PIN-authorized command always
--    debits (or holds) that account, whose row the ledger locks anyway, so the PIN check and
--    the debit now share one lock instead of also locking the user row. The salt and keyed
--    hash stay on users: they never change and the service caches them.
ALTER TABLE accounts
  ADD COLUMN pin_failures int NOT NULL DEFAULT 0 CHECK (pin_failures >= 0),
  ADD COLUMN pin_locked_until timestamptz;

UPDATE accounts a SET pin_failures = u.pin_failures, pin_locked_until = u.pin_locked_until
  FROM wallets w JOIN users u ON u.id = w.user_id
 WHERE w.account_id = a.id;

ALTER TABLE users DROP COLUMN pin_failures, DROP COLUMN pin_locked_until;

-- 2. Entries' references are checked once per statement instead of twice per row. The
--    per-row foreign keys cost two lookups (and a row lock on the account) for every entry;
--    the balance trigger now also refuses entries whose ledger transaction or account does
--    not exist, and neither of those can ever be deleted, so every entry keeps its parents.
ALTER TABLE entries DROP CONSTRAINT entries_transaction_id_fkey, DROP CONSTRAINT entries_account_id_fkey;

CREATE OR REPLACE FUNCTION new_entries_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT transaction_id, sum(amount) AS total, count(*) AS legs INTO bad
    FROM new_entries
   GROUP BY transaction_id
  HAVING sum(amount) <> 0 OR count(*) < 2
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger transaction % does not balance (sum %, % entries)', bad.transaction_id, bad.total, bad.legs
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT n.transaction_id INTO bad FROM new_entries n
   WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = n.transaction_id) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'entries refer to ledger transaction %, which does not exist', bad.transaction_id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT n.account_id INTO bad FROM new_entries n
   WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account_id) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'entries refer to account %, which does not exist', bad.account_id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END;
$$;

-- Ledger transactions are as immutable as their entries; accounts are never deleted (their
-- ids, GENERATED ALWAYS, cannot be changed either).
CREATE FUNCTION ledger_rows_are_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% of % refused: ledger rows are permanent', TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_transactions_no_update_delete
  BEFORE UPDATE OR DELETE ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_rows_are_permanent();

CREATE TRIGGER ledger_transactions_no_truncate
  BEFORE TRUNCATE ON ledger_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_rows_are_permanent();

CREATE TRIGGER accounts_no_delete
  BEFORE DELETE ON accounts
  FOR EACH ROW EXECUTE FUNCTION ledger_rows_are_permanent();

CREATE TRIGGER accounts_no_truncate
  BEFORE TRUNCATE ON accounts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_rows_are_permanent();
