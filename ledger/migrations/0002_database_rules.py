"""The ledger's rules, enforced by PostgreSQL itself (not only by Python):

- entries refuse UPDATE and DELETE: a mistake is corrected by a new transaction (TRUNCATE,
  which only the tables' owner may run, is left to role separation in deployment: Django's
  test flush needs it);
- every INSERT into entries must bring, for each ledger transaction it touches, legs that
  sum to zero and number at least two (a statement-level trigger over the inserted rows, so
  it runs once per INSERT, not once per entry);
- the audit log refuses UPDATE and DELETE too.

Customer balances and held amounts are kept non-negative by CHECK constraints on
ledger_account (migration 0001).
"""

from django.db import migrations

IMMUTABLE = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% rows are append-only (% refused)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON ledger_auditlog
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""

BALANCED = """
CREATE FUNCTION ledger_new_entries_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT transaction_id, sum(amount) AS total, count(*) AS legs INTO bad
    FROM new_entries
   GROUP BY transaction_id
  HAVING sum(amount) <> 0 OR count(*) < 2
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger transaction % does not balance (sum %, % legs)', bad.transaction_id, bad.total, bad.legs
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER entry_transactions_balance AFTER INSERT ON ledger_entry
  REFERENCING NEW TABLE AS new_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_new_entries_balance();
"""

UNDO = """
DROP TRIGGER entry_transactions_balance ON ledger_entry;
DROP FUNCTION ledger_new_entries_balance();
DROP TRIGGER entry_append_only ON ledger_entry;
DROP TRIGGER audit_append_only ON ledger_auditlog;
DROP FUNCTION ledger_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunSQL(IMMUTABLE + BALANCED, UNDO)]
