-- Holds, withdrawals, bank accounts, merchant payments, refunds, cashback, daily limits.

-- The cashback pool is funded by admins and pays cashback out; it must never pay out money
-- it does not have.
ALTER TABLE accounts ADD CONSTRAINT cashback_pool_not_negative CHECK (code IS DISTINCT FROM 'cashback_pool' OR balance >= 0);

-- A hold reserves money on an account (accounts.held) without moving it. It is later
-- posted (the money moves in a ledger transaction) or released (the reservation ends).
-- Holds take their position in history from the same sequence as entries.
CREATE TABLE holds (
  id              uuid PRIMARY KEY,
  seq             bigint NOT NULL DEFAULT nextval('entries_id_seq'::regclass),
  account_id      bigint NOT NULL REFERENCES accounts (id),
  amount          bigint NOT NULL CHECK (amount > 0),
  type            text NOT NULL CHECK (type IN ('withdrawal')),
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'posted', 'released')),
  balance_at_hold bigint NOT NULL,
  transaction_id  uuid REFERENCES ledger_transactions (id),
  created_at      timestamptz NOT NULL DEFAULT now(),
  settled_at      timestamptz,
  CONSTRAINT posted_hold_has_transaction CHECK ((status = 'posted') = (transaction_id IS NOT NULL)),
  CONSTRAINT settled_hold_has_time CHECK ((status = 'pending') = (settled_at IS NULL))
);

CREATE INDEX holds_account_history ON holds (account_id, seq DESC);

-- Outgoing money per wallet per local day, for the daily limit. Written only while the
-- account's row lock is held, in the same transaction as the debit it counts.
CREATE TABLE daily_outgoing (
  account_id  bigint NOT NULL REFERENCES accounts (id),
  day         date NOT NULL,
  amount      bigint NOT NULL CHECK (amount >= 0),
  PRIMARY KEY (account_id, day)
);

CREATE TABLE bank_accounts (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id         uuid NOT NULL REFERENCES users (id),
  holder_name     text NOT NULL CHECK (char_length(holder_name) BETWEEN 1 AND 100),
  -- The full number is needed to pay out; it is never returned by the API or logged.
  account_number  text NOT NULL CHECK (account_number ~ '^[0-9]{9,18}$'),
  ifsc            text NOT NULL CHECK (ifsc ~ '^[A-Z]{4}0[A-Z0-9]{6}$'),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, account_number, ifsc)
);

CREATE TABLE withdrawals (
  id               uuid PRIMARY KEY,
  wallet_id        uuid NOT NULL REFERENCES wallets (id),
  bank_account_id  uuid NOT NULL REFERENCES bank_accounts (id),
  hold_id          uuid NOT NULL UNIQUE REFERENCES holds (id),
  amount           bigint NOT NULL CHECK (amount > 0),
  currency         char(3) NOT NULL,
  -- pending: hold placed; submitted: the bank has the payout; then succeeded or failed.
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'submitted', 'succeeded', 'failed')),
  failure_reason   text CHECK (char_length(failure_reason) <= 255),
  bank_reference   text CHECK (char_length(bank_reference) <= 255),
  flagged          boolean NOT NULL DEFAULT false,
  flag_reason      text CHECK (char_length(flag_reason) <= 500),
  submitted_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX withdrawals_unfinished ON withdrawals (created_at) WHERE status IN ('pending', 'submitted');

CREATE TABLE bank_events (
  id             text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
  withdrawal_id  uuid NOT NULL REFERENCES withdrawals (id),
  type           text NOT NULL CHECK (char_length(type) <= 64),
  outcome        text NOT NULL CHECK (char_length(outcome) <= 64),
  received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cashback_campaigns (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
  percent_bps       int NOT NULL CHECK (percent_bps BETWEEN 1 AND 10000),
  cap_per_payment   bigint NOT NULL CHECK (cap_per_payment > 0),
  budget            bigint NOT NULL CHECK (budget > 0),
  spent             bigint NOT NULL DEFAULT 0,
  merchant_wallet_id uuid REFERENCES wallets (id),
  starts_at         timestamptz NOT NULL,
  ends_at           timestamptz NOT NULL,
  created_by        uuid REFERENCES users (id),
  created_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT campaign_window CHECK (ends_at > starts_at),
  CONSTRAINT campaign_within_budget CHECK (spent BETWEEN 0 AND budget)
);

-- One row per payment to a merchant: what can still be refunded and what cashback came with it.
CREATE TABLE merchant_payments (
  transaction_id       uuid PRIMARY KEY REFERENCES ledger_transactions (id),
  customer_wallet_id   uuid NOT NULL REFERENCES wallets (id),
  merchant_wallet_id   uuid NOT NULL REFERENCES wallets (id),
  amount               bigint NOT NULL CHECK (amount > 0),
  fee                  bigint NOT NULL CHECK (fee >= 0),
  order_id             text CHECK (char_length(order_id) <= 100),
  refunded             bigint NOT NULL DEFAULT 0,
  campaign_id          uuid REFERENCES cashback_campaigns (id),
  cashback             bigint NOT NULL DEFAULT 0 CHECK (cashback >= 0),
  cashback_transaction_id uuid REFERENCES ledger_transactions (id),
  cashback_reversed    bigint NOT NULL DEFAULT 0,
  created_at           timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT refunds_within_payment CHECK (refunded BETWEEN 0 AND amount),
  CONSTRAINT reversal_within_cashback CHECK (cashback_reversed BETWEEN 0 AND cashback)
);

CREATE INDEX merchant_payments_by_merchant ON merchant_payments (merchant_wallet_id, created_at DESC);

CREATE TABLE refunds (
  transaction_id          uuid PRIMARY KEY REFERENCES ledger_transactions (id),
  payment_transaction_id  uuid NOT NULL REFERENCES merchant_payments (transaction_id),
  amount                  bigint NOT NULL CHECK (amount > 0),
  cashback_reversed       bigint NOT NULL CHECK (cashback_reversed >= 0),
  reason                  text CHECK (char_length(reason) <= 280),
  created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_by_payment ON refunds (payment_transaction_id);

-- The sandbox gateway and bank keep their own state, as the real ones would on their side.
CREATE TABLE sandbox_gateway_payments (
  payment_id  uuid PRIMARY KEY,
  status      text NOT NULL CHECK (status IN ('succeeded', 'failed')),
  amount      bigint NOT NULL,
  currency    char(3) NOT NULL,
  reference   text NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sandbox_bank_payouts (
  reference       text PRIMARY KEY CHECK (char_length(reference) <= 255),
  amount          bigint NOT NULL,
  currency        char(3) NOT NULL,
  account_number  text NOT NULL,
  ifsc            text NOT NULL,
  status          text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed', 'cancelled')),
  submissions     int NOT NULL DEFAULT 1,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Payment attempt lifecycle: expired attempts that are paid anyway are credited and flagged.
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'pending';
