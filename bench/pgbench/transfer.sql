-- One transfer of 1 minor unit, as the SQL the service sends for POST /wallet/transfer (the
-- statements Django logs for one request, in order), for pgbench against the service's own
-- tables: PostgreSQL's ceiling for this transaction. bench/load.py runs it with -M prepared
-- and -D first=<the customers' first ledger account id> -D n=<how many> -D hot=<0|1>
-- -D merchant=<the hot merchant's account id>.
--
-- Where the service finds a row by what the request names (the token's user, the recipient's
-- handle), this script finds the same row by the ledger account it drew (the same kind of
-- unique-index look-up). Balances are read under the lock and balance_after written from them,
-- so the ledger reconciles after a run. The outbox event is written already delivered, so the
-- service's worker does not send notifications for these transfers.
\set i random(0, :n - 1)
\set j random(0, :n - 2)
\if :j >= :i
\set j :j + 1
\endif
\set a :first + :i
\if :hot
\set b :merchant
\else
\set b :first + :j
\endif
\set r random(1, 9000000000000000)

-- Authentication: the user with an open login.
SELECT u.id AS uid, w.id AS wid FROM accounts_user u JOIN wallets_wallet w ON w.user_id = u.id JOIN accounts_tokenfamily f ON f.user_id = u.id WHERE w.account_id = :a AND u.is_active AND f.revoked_at IS NULL ORDER BY u.id LIMIT 1 \gset
-- A stored answer for this Idempotency-Key?
SELECT id, user_id, key, request_hash, response_status, response_body, created_at FROM wallets_idempotencykey WHERE key = ('pgb-' || :r::text) AND user_id = :uid::uuid ORDER BY id LIMIT 1;
-- The PIN check, in its own transaction.
BEGIN;
SELECT user_id, digest, failed_attempts, locked_until, updated_at FROM accounts_pin WHERE user_id = :uid::uuid ORDER BY user_id LIMIT 1 FOR UPDATE;
COMMIT;
-- The money transaction.
BEGIN;
SELECT pg_try_advisory_xact_lock(:r);
SELECT id, user_id, key, request_hash, response_status, response_body, created_at FROM wallets_idempotencykey WHERE key = ('pgb-' || :r::text) AND user_id = :uid::uuid ORDER BY id LIMIT 1;
SAVEPOINT transfer;
SELECT w.id AS rwid, w.user_id AS ruid, u.email, u.name, a.balance FROM wallets_wallet w JOIN accounts_user u ON w.user_id = u.id JOIN ledger_account a ON w.account_id = a.id WHERE w.account_id = :b ORDER BY w.id LIMIT 1 \gset
SELECT max(balance) FILTER (WHERE id = :a) AS balance_a, max(balance) FILTER (WHERE id = :b) AS balance_b FROM (SELECT id, balance FROM ledger_account WHERE id IN (:a, :b) ORDER BY id FOR NO KEY UPDATE OF ledger_account) AS locked \gset
SELECT id FROM wallets_wallet WHERE id IN (:wid::uuid, :rwid::uuid) AND status = 'frozen';
SELECT t.code, t.name, t.per_transaction_limit, t.daily_outgoing_limit, t.monthly_outgoing_limit, t.balance_ceiling FROM accounts_tier t JOIN accounts_user u ON t.code = u.tier_id WHERE u.id = :uid::uuid LIMIT 21;
WITH clock AS (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start) SELECT coalesce(sum(-e.amount) FILTER (WHERE e.created_at >= clock.day_start), 0) AS today, coalesce(sum(-e.amount), 0) AS this_month FROM ledger_entry AS e, clock WHERE e.account_id = :a AND e.id > (SELECT coalesce(max(b.id), 0) FROM ledger_entry AS b WHERE b.transaction_id = (SELECT t.id FROM ledger_transaction AS t WHERE t.created_at < (SELECT month_start FROM clock) - interval '1 day' ORDER BY t.created_at DESC LIMIT 1)) AND e.created_at >= clock.month_start AND e.amount < 0 AND e.type = ANY('{transfer,payment,withdrawal}');
SELECT t.code, t.name, t.per_transaction_limit, t.daily_outgoing_limit, t.monthly_outgoing_limit, t.balance_ceiling FROM accounts_tier t JOIN accounts_user u ON t.code = u.tier_id WHERE u.id = :ruid::uuid LIMIT 21;
INSERT INTO ledger_transaction (id, type, note, reference, created_at) VALUES (gen_random_uuid(), 'transfer', '', 'wallet:' || :wid::text, DEFAULT) RETURNING id AS txn, created_at \gset
\set after_a :balance_a - 1
\set after_b :balance_b + 1
INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type, created_at) VALUES (:txn::uuid, :a, -1, :after_a, 'transfer', DEFAULT), (:txn::uuid, :b, 1, :after_b, 'transfer', DEFAULT) RETURNING id, created_at;
UPDATE ledger_account AS a SET balance = a.balance + d.delta FROM unnest(ARRAY[:a::bigint, :b::bigint], ARRAY[-1, 1]::bigint[]) AS d(id, delta) WHERE a.id = d.id;
INSERT INTO ledger_outboxevent (type, payload, created_at, available_at, leased_until, attempts, delivered_at, last_error) VALUES ('transfer.posted', jsonb_build_object('transaction_id', :txn::text, 'wallet_ids', jsonb_build_array(:wid::text, :rwid::text), 'from_wallet', :wid::text, 'to_wallet', :rwid::text, 'amount', 1, 'currency', 'INR'), DEFAULT, DEFAULT, NULL, 0, statement_timestamp(), '') RETURNING id, created_at, available_at;
RELEASE SAVEPOINT transfer;
INSERT INTO wallets_idempotencykey (user_id, key, request_hash, response_status, response_body, created_at) VALUES (:uid::uuid, 'pgb-' || :r::text, md5(:r::text) || md5(:txn::text), 201, jsonb_build_object('transaction', jsonb_build_object('id', :txn::text, 'type', 'transfer', 'direction', 'debit', 'amount', 1, 'currency', 'INR', 'balance_after', :after_a::bigint, 'status', 'posted', 'counterparty', jsonb_build_object('handle', 'bench.000000@wallet', 'name', 'bench 000000'), 'note', '', 'created_at', statement_timestamp()), 'balance', :after_a::bigint), DEFAULT) RETURNING id, created_at;
COMMIT;
