import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig, type Config } from '../src/config.js';
import { createPool, type Db } from '../src/db/pool.js';
import { buildApp, REDACT } from '../src/app.js';
import type { App, Context } from '../src/http/context.js';
import { signPayload } from '../src/signatures.js';
import { reconcile } from '../src/ledger/reconcile.js';
import { withTransaction } from '../src/db/transaction.js';

export const SECRETS = {
  JWT_SECRET: 'test-jwt-secret-0123456789abcdef0123456789',
  PIN_PEPPER: 'test-pin-pepper-0123456789abcdef0123456789',
  GATEWAY_WEBHOOK_SECRET: 'test-webhook-secret-0123456789abcdef012345',
  BANK_WEBHOOK_SECRET: 'test-bank-secret-0123456789abcdef0123456789',
};

/** A fresh database for one test file, cloned from the migrated template. */
export async function createTestDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const server = process.env.TEST_PG_URL;
  const template = process.env.TEST_PG_TEMPLATE;
  if (!server || !template) throw new Error('run the tests with `npm test`, which starts PostgreSQL');
  const name = `wallet_test_${randomBytes(6).toString('hex')}`;
  const admin = createPool(server, 1);
  await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
  await admin.end();
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const a = createPool(server, 1);
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

export interface TestApp {
  app: App;
  ctx: Context;
  db: Db;
  config: Config;
  /** Every log line the app wrote, for tests that scan logs for secrets. */
  logs: string[];
  close: () => Promise<void>;
}

export async function startApp(env: Record<string, string> = {}): Promise<TestApp> {
  const database = await createTestDatabase();
  // Tests register many users from one address; the abuse-limit tests turn the limits on.
  const { config } = loadConfig({ NODE_ENV: 'test', ...SECRETS, DATABASE_URL: database.url, RATE_LIMITS_ENABLED: 'false', ...env });
  const db = createPool(database.url, 20);
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const loggerInstance = pino({ level: env.LOG_LEVEL ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } }, stream);
  const { app, ctx } = await buildApp({ config, db, loggerInstance });
  return {
    app,
    ctx,
    db,
    config,
    logs,
    close: async () => {
      await app.close();
      await ctx.engine.idle();
      await db.end();
      await database.drop();
    },
  };
}

let counter = 0;
export function uniqueEmail(prefix = 'user'): string {
  return `${prefix}.${process.pid}.${++counter}.${randomBytes(3).toString('hex')}@example.com`;
}

export interface User {
  id: string;
  email: string;
  password: string;
  pin: string;
  token: string;
  refreshToken: string;
  wallet: { id: string; handle: string };
}

export async function registerUser(
  t: TestApp,
  options: { name?: string; role?: 'customer' | 'merchant'; pin?: string; businessName?: string } = {},
): Promise<User> {
  const email = uniqueEmail(options.name?.toLowerCase().replace(/\W/g, '') ?? 'user');
  const password = 'correct horse battery';
  const pin = options.pin ?? '2468';
  const reg = await t.app.inject({
    method: 'POST',
    url: '/auth/register',
    payload: {
      email,
      password,
      pin,
      name: options.name ?? 'Test User',
      ...(options.role ? { role: options.role } : {}),
      ...(options.businessName ? { business_name: options.businessName } : {}),
    },
  });
  assert.equal(reg.statusCode, 201, reg.body);
  const body = reg.json();
  const tokens = await login(t, email, password);
  return { id: body.user.id, email, password, pin, token: tokens.access_token, refreshToken: tokens.refresh_token, wallet: body.wallet };
}

export async function login(t: TestApp, email: string, password: string) {
  const res = await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as { access_token: string; refresh_token: string };
}

export function auth(user: { token: string }, key?: string | null): Record<string, string> {
  return { authorization: `Bearer ${user.token}`, ...(typeof key === 'string' ? { 'idempotency-key': key } : {}) };
}

export function newKey(): string {
  return `key-${randomBytes(8).toString('hex')}`;
}

/** Delivers a correctly signed gateway webhook through the real route. */
export function deliverWebhook(t: TestApp, event: unknown, options: { secret?: string; timestamp?: number; raw?: string } = {}) {
  const body = options.raw ?? JSON.stringify(event);
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  return t.app.inject({
    method: 'POST',
    url: '/webhooks/gateway',
    headers: {
      'content-type': 'application/json',
      'gateway-signature': signPayload(options.secret ?? t.config.gatewayWebhookSecret, body, timestamp),
    },
    payload: body,
  });
}

export function successEvent(paymentId: string, amount: number, id = `evt_${randomBytes(6).toString('hex')}`) {
  return { id, type: 'payment.succeeded', data: { payment_id: paymentId, amount, currency: 'INR', gateway_reference: 'ref_1' } };
}

/** Adds money the way production does: a payment attempt, then the gateway's signed success. */
export async function fund(t: TestApp, user: User, amount: number): Promise<string> {
  const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount } });
  assert.equal(res.statusCode, 201, res.body);
  const paymentId = res.json().payment_id as string;
  const hook = await deliverWebhook(t, successEvent(paymentId, amount));
  assert.equal(hook.statusCode, 200, hook.body);
  assert.equal(hook.json().outcome, 'credited');
  return paymentId;
}

export async function balanceOf(t: TestApp, user: User): Promise<number> {
  const res = await t.app.inject({ method: 'GET', url: '/wallet/balance', headers: auth(user) });
  assert.equal(res.statusCode, 200, res.body);
  return res.json().balance as number;
}

export function transfer(t: TestApp, from: User, to: string, amount: unknown, key: string | null = newKey(), extra: Record<string, unknown> = {}) {
  return t.app.inject({
    method: 'POST',
    url: '/wallet/transfer',
    headers: auth(from, key),
    payload: { to, amount, pin: from.pin, ...extra },
  });
}

/** Counts rows that tell whether anything moved: used to prove a refused request changed nothing. */
export async function snapshot(db: Db) {
  const { rows } = await db.query<{ entries: number; transactions: number; keys: number; payments: number; balances: string }>(
    `SELECT (SELECT count(*) FROM entries)::bigint AS entries,
            (SELECT count(*) FROM ledger_transactions)::bigint AS transactions,
            (SELECT count(*) FROM idempotency_keys)::bigint AS keys,
            (SELECT count(*) FROM payments)::bigint AS payments,
            (SELECT string_agg(id || ':' || balance || ':' || held, ',' ORDER BY id) FROM accounts) AS balances`,
  );
  return rows[0]!;
}

/**
 * The ledger invariants, checked after every test that moves money: balances sum to zero,
 * every cached balance equals its entries, held equals the pending holds, no customer
 * balance is negative, every ledger transaction balances, and no idempotency key moved
 * money more than once.
 */
export async function assertInvariants(db: Db): Promise<void> {
  const result = await reconcile(db);
  assert.deepEqual(result.mismatches, [], 'reconciliation found mismatches');
  assert.equal(result.total_balance, 0);
  const negative = await db.query(`SELECT id FROM accounts WHERE kind = 'customer' AND (balance < 0 OR balance - held < 0)`);
  assert.equal(negative.rowCount, 0, 'no customer balance below zero');
  const held = await db.query(
    `SELECT a.id FROM accounts a
      WHERE a.held <> coalesce((SELECT sum(amount) FROM holds h WHERE h.account_id = a.id AND h.status = 'pending'), 0)`,
  );
  assert.equal(held.rowCount, 0, 'available = balance - held, and held is exactly the pending holds');
  const twice = await db.query(
    `SELECT response->'transaction'->>'id' AS id, count(*) FROM idempotency_keys
      WHERE response ? 'transaction' GROUP BY 1 HAVING count(*) > 1`,
  );
  assert.equal(twice.rowCount, 0, 'each transaction is recorded under one idempotency key');
}

/** An administrator, created the way the CLI creates one. */
export async function createAdmin(t: TestApp): Promise<{ id: string; token: string }> {
  const email = uniqueEmail('admin');
  const { user } = await t.ctx.auth.register({ email, password: 'admin password 1', role: 'admin', name: 'Admin' });
  return { id: user.id, token: (await login(t, email, 'admin password 1')).access_token };
}

export function pay(t: TestApp, from: User, merchant: string, amount: unknown, key: string | null = newKey(), extra: Record<string, unknown> = {}) {
  return t.app.inject({
    method: 'POST',
    url: '/wallet/pay',
    headers: auth(from, key),
    payload: { merchant, amount, pin: from.pin, ...extra },
  });
}

export function refund(t: TestApp, merchant: User, transactionId: string, payload: Record<string, unknown> | undefined, key: string | null = newKey()) {
  return t.app.inject({
    method: 'POST',
    url: `/merchant/payments/${transactionId}/refund`,
    headers: auth(merchant, key),
    ...(payload ? { payload } : {}),
  });
}

export async function fundPool(t: TestApp, admin: { token: string }, amount: number): Promise<void> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/admin/cashback-pool/fund',
    headers: auth(admin, newKey()),
    payload: { amount, reason: 'test funding' },
  });
  assert.equal(res.statusCode, 201, res.body);
}

export async function createCampaign(t: TestApp, admin: { token: string }, fields: Record<string, unknown>) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/admin/cashback-campaigns',
    headers: auth(admin),
    payload: {
      name: 'Test campaign',
      percent_bps: 1000,
      cap_per_payment: 10_000,
      budget: 100_000,
      starts_at: new Date(Date.now() - 60_000).toISOString(),
      ends_at: new Date(Date.now() + 3_600_000).toISOString(),
      ...fields,
    },
  });
  assert.equal(res.statusCode, 201, res.body);
  return res.json() as { id: string; spent: number; budget: number };
}

export async function addBank(t: TestApp, user: User, accountNumber = '123456789012'): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/wallet/bank-accounts',
    headers: auth(user),
    payload: { account_number: accountNumber, ifsc: 'HDFC0001234', holder_name: 'Test Holder' },
  });
  assert.equal(res.statusCode, 201, res.body);
  return res.json().id;
}

export function withdraw(t: TestApp, user: User, amount: unknown, bankAccount: string, key: string | null = newKey(), extra: Record<string, unknown> = {}) {
  return t.app.inject({ method: 'POST', url: '/wallet/withdraw', headers: auth(user, key), payload: { amount, pin: user.pin, bank_account: bankAccount, ...extra } });
}

export const clearingAccount = async (db: Db) => (await db.query<{ id: number }>(`SELECT id FROM accounts WHERE code = 'gateway_clearing'`)).rows[0]!.id;

/** New customer accounts with no wallet: the engine's commands name accounts, not wallets. */
export const bareAccounts = async (db: Db, count: number) =>
  (await db.query<{ id: number }>(`INSERT INTO accounts (kind, currency) SELECT 'customer', 'INR' FROM generate_series(1, $1::int) RETURNING id`, [count])).rows.map((r) => r.id);

/**
 * Gives `account` a long history fast: `count` deposits of 1 from the gateway's clearing
 * account, written straight in SQL as balanced ledger transactions (both legs in one INSERT,
 * as the balance trigger requires), with both balances and every balance_after kept true.
 */
export async function bulkDeposits(db: Db, account: number, count: number): Promise<void> {
  await withTransaction(db, async (tx) => {
    const clearing = await tx.query<{ id: number; balance: number }>(`SELECT id, balance FROM accounts WHERE code = 'gateway_clearing' FOR UPDATE`);
    const { id: source, balance: opening } = clearing.rows[0]!;
    await tx.query(`INSERT INTO ledger_transactions (id, type) SELECT md5('bulk' || $1 || '-' || i)::uuid, 'deposit' FROM generate_series(1, $2::int) i`, [account, count]);
    await tx.query(
      `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type)
       SELECT md5('bulk' || $1 || '-' || i)::uuid, x.account_id, x.amount, x.balance_after, 'deposit'
         FROM generate_series(1, $4::int) i,
              LATERAL (VALUES ($2::bigint, -1::bigint, $3::bigint - i, 1), ($1::bigint, 1::bigint, i, 2)) AS x(account_id, amount, balance_after, ord)
        ORDER BY i, x.ord`,
      [account, source, opening, count],
    );
    await tx.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [account, count]);
    await tx.query('UPDATE accounts SET balance = balance - $2 WHERE id = $1', [source, count]);
  });
}
