-- The double-entry ledger. The database itself enforces the rules that make money safe:
-- entries are immutable, every ledger transaction sums to zero, and customer accounts
-- never go below zero. Application code is a second line of defence, not the only one.

CREATE TABLE accounts (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- 'customer' accounts belong to wallets; 'system' accounts are where money enters and
  -- leaves the ledger (gateway clearing, bank payouts, fees, cashback pool).
  kind        text NOT NULL CHECK (kind IN ('customer', 'system')),
  code        text UNIQUE CHECK (char_length(code) BETWEEN 1 AND 64),
  currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  balance     bigint NOT NULL DEFAULT 0,
  -- Money reserved by holds (pending withdrawals); spendable = balance - held.
  held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT customer_balance_not_negative CHECK (kind <> 'customer' OR balance >= 0),
  CONSTRAINT customer_available_not_negative CHECK (kind <> 'customer' OR balance - held >= 0),
  CONSTRAINT system_account_has_code CHECK (kind <> 'system' OR code IS NOT NULL)
);

CREATE TABLE ledger_transactions (
  id          uuid PRIMARY KEY,
  type        text NOT NULL CHECK (type IN ('deposit', 'transfer', 'payment', 'refund', 'cashback',
                                            'withdrawal', 'withdrawal_reversal', 'adjustment')),
  note        text CHECK (char_length(note) <= 280),
  -- Where this movement came from (a payment attempt, a withdrawal, ...), for audit.
  reference   text CHECK (char_length(reference) <= 255),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entries (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id  uuid NOT NULL REFERENCES ledger_transactions (id),
  account_id      bigint NOT NULL REFERENCES accounts (id),
  -- Debit negative, credit positive, never zero.
  amount          bigint NOT NULL CHECK (amount <> 0),
  balance_after   bigint NOT NULL,
  -- Copied from the ledger transaction so history filters need no join.
  type            text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX entries_account_history ON entries (account_id, id DESC);
CREATE INDEX entries_by_transaction ON entries (transaction_id);

-- Entries are immutable: a mistake is corrected by a new, reversing transaction.
CREATE FUNCTION entries_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger entries are immutable (% refused)', TG_OP
    USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER entries_no_update_delete
  BEFORE UPDATE OR DELETE ON entries
  FOR EACH ROW EXECUTE FUNCTION entries_are_immutable();

CREATE TRIGGER entries_no_truncate
  BEFORE TRUNCATE ON entries
  FOR EACH STATEMENT EXECUTE FUNCTION entries_are_immutable();

-- Checked at COMMIT, once all legs of a ledger transaction are written.
CREATE FUNCTION ledger_transaction_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  total numeric;
  legs  int;
BEGIN
  SELECT sum(amount), count(*) INTO total, legs FROM entries WHERE transaction_id = NEW.transaction_id;
  IF total <> 0 OR legs < 2 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance (sum %, % entries)', NEW.transaction_id, total, legs
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER entries_must_balance
  AFTER INSERT ON entries
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION ledger_transaction_must_balance();

-- The system accounts through which money enters and leaves the ledger.
INSERT INTO accounts (kind, code, currency) VALUES
  ('system', 'gateway_clearing', 'INR'),
  ('system', 'bank_payouts', 'INR'),
  ('system', 'fees', 'INR'),
  ('system', 'cashback_pool', 'INR'),
  ('system', 'adjustments', 'INR');
