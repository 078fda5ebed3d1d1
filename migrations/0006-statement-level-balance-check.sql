-- Replace the per-row deferred balance check with a per-statement one.
--
-- The deferred constraint trigger ran once per entry at commit, each run summing that
-- entry's ledger transaction again: 2 index scans per transfer, on the commit path of every
-- batch. This trigger runs once per INSERT statement over the rows that statement added
-- (a transition table) and refuses it unless, for every ledger transaction it touched, its
-- new rows sum to zero and number at least two. Entries are immutable and every statement
-- adds balanced groups, so every ledger transaction's entries always sum to zero: the same
-- guarantee, checked once per batch instead of twice per transfer. It is also stricter: a
-- transaction's legs must arrive together, in one statement.

DROP TRIGGER entries_must_balance ON entries;
DROP FUNCTION ledger_transaction_must_balance();

CREATE FUNCTION new_entries_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
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
  RETURN NULL;
END;
$$;

CREATE TRIGGER entries_must_balance
  AFTER INSERT ON entries
  REFERENCING NEW TABLE AS new_entries
  FOR EACH STATEMENT EXECUTE FUNCTION new_entries_must_balance();
