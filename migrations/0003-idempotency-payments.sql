-- Idempotency keys are written in the same database transaction as the work they guard,
-- so a key exists if and only if its work committed.
CREATE TABLE idempotency_keys (
  principal     text NOT NULL CHECK (char_length(principal) <= 100),
  key           text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
  -- SHA-256 of the request (method, route, body without secrets).
  request_hash  bytea NOT NULL,
  status_code   int NOT NULL CHECK (status_code BETWEEN 200 AND 599),
  response      jsonb NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (principal, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE payments (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  wallet_id           uuid NOT NULL REFERENCES wallets (id),
  amount              bigint NOT NULL CHECK (amount > 0),
  currency            char(3) NOT NULL,
  status              text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed', 'expired')),
  gateway_reference   text CHECK (char_length(gateway_reference) <= 255),
  transaction_id      uuid REFERENCES ledger_transactions (id),
  flagged             boolean NOT NULL DEFAULT false,
  flag_reason         text CHECK (char_length(flag_reason) <= 500),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT succeeded_payment_is_posted CHECK ((status = 'succeeded') = (transaction_id IS NOT NULL))
);

CREATE INDEX payments_by_wallet ON payments (wallet_id, created_at DESC);

-- Every gateway event we accepted, by the gateway's event id: a duplicate delivery is
-- recognised here before anything else happens.
CREATE TABLE gateway_events (
  id           text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
  payment_id   uuid NOT NULL REFERENCES payments (id),
  type         text NOT NULL CHECK (char_length(type) <= 64),
  outcome      text NOT NULL CHECK (char_length(outcome) <= 64),
  received_at  timestamptz NOT NULL DEFAULT now()
);
