CREATE TABLE users (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email               text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
  password_hash       text NOT NULL CHECK (char_length(password_hash) <= 255),
  role                text NOT NULL CHECK (role IN ('customer', 'merchant', 'admin')),
  name                text CHECK (char_length(name) <= 100),
  phone               text CHECK (char_length(phone) <= 20),
  business_name       text CHECK (char_length(business_name) <= 100),
  -- HMAC-SHA256(pepper, salt || pin): useless without the server-side pepper.
  pin_salt            bytea,
  pin_hash            bytea,
  pin_failures        int NOT NULL DEFAULT 0 CHECK (pin_failures >= 0),
  pin_locked_until    timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT merchant_has_business_name CHECK (role <> 'merchant' OR business_name IS NOT NULL)
);

CREATE UNIQUE INDEX users_email_unique ON users (lower(email));

CREATE TABLE wallets (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL UNIQUE REFERENCES users (id),
  account_id  bigint NOT NULL UNIQUE REFERENCES accounts (id),
  handle      text NOT NULL UNIQUE CHECK (handle ~ '^[a-z0-9][a-z0-9.]{0,48}@wallet$'),
  currency    char(3) NOT NULL,
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A login is a session; each refresh rotates the token inside the session's family.
CREATE TABLE sessions (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL REFERENCES users (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz,
  revoke_reason text CHECK (revoke_reason IN ('logout', 'refresh_token_reuse', 'admin'))
);

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
  -- SHA-256 of the token: the token itself is never stored.
  token_hash  bytea PRIMARY KEY,
  session_id  uuid NOT NULL REFERENCES sessions (id),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Append-only record of administrative actions: who did what, to what, and when.
CREATE TABLE audit_log (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  actor_id    uuid REFERENCES users (id),
  action      text NOT NULL CHECK (char_length(action) <= 64),
  subject     text NOT NULL CHECK (char_length(subject) <= 255),
  detail      jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
