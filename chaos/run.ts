/**
 * `npm run chaos`: money under torture. Starts PostgreSQL and the built service as a separate
 * process, then runs many concurrent clients doing random deposits (with duplicate and
 * out-of-order gateway webhooks), transfers, merchant payments, refunds and withdrawals (with
 * duplicate and contradicting bank callbacks), retrying with the same Idempotency-Key until
 * each request has a definitive answer and sometimes racing one key from two connections.
 * Meanwhile the service is killed with SIGKILL at random moments and restarted, and
 * PostgreSQL is restarted once. Afterwards it proves from the database that every 2xx moved
 * money exactly once and every 4xx moved nothing (each wallet's balance equals the sum of
 * what its 2xx answers promised), that the ledger reconciles (sum zero, cached balances equal
 * entries, no negative customer balance, held equals pending holds), that no hold is left
 * pending, and that /readyz answered again within seconds of every restart.
 *
 * CHAOS_KILLS (default 20), CHAOS_CLIENTS (16), CHAOS_WALLETS (24), CHAOS_READY_LIMIT_S (15).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import { createPool, ensureDatabase } from '../src/db/pool.js';
import { reconcile } from '../src/ledger/reconcile.js';
import { signPayload } from '../src/signatures.js';
import { freePort } from '../test/free-port.js';
import { serviceNodeFlags } from '../bench/service-flags.js';

const KILLS = Number(process.env.CHAOS_KILLS ?? 20);
const CLIENTS = Number(process.env.CHAOS_CLIENTS ?? 16);
const WALLETS = Number(process.env.CHAOS_WALLETS ?? 24);
const READY_LIMIT_S = Number(process.env.CHAOS_READY_LIMIT_S ?? 15);
const SECRETS = {
  JWT_SECRET: randomBytes(32).toString('hex'),
  PIN_PEPPER: randomBytes(32).toString('hex'),
  GATEWAY_WEBHOOK_SECRET: randomBytes(32).toString('hex'),
  BANK_WEBHOOK_SECRET: randomBytes(32).toString('hex'),
};
const PIN = '2468';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const between = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

interface Party {
  email: string;
  token: string;
  walletId: string;
  handle: string;
  merchant: boolean;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

const counts = {
  operations: 0,
  answered2xx: 0,
  answered4xx: 0,
  retries: 0,
  racedKeys: 0,
  webhooks: 0,
  callbacks: 0,
  kills: 0,
  postgresRestarts: 0,
  violations: 0,
};
const violations: string[] = [];
function violation(message: string): void {
  counts.violations += 1;
  if (violations.length < 50) violations.push(message);
}

let base = '';
let stopping = false;

/** Sends one request; undefined when no definitive answer came (connection lost, 5xx, ...). */
async function send(method: string, path: string, body: unknown, headers: Record<string, string>): Promise<Answer | undefined> {
  try {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    // 409 idempotency_key_in_use, 429 and 5xx are not answers: the same request is retried.
    if (res.status >= 500 || res.status === 429 || (res.status === 409 && parsed.code === 'idempotency_key_in_use')) return undefined;
    return { status: res.status, body: parsed };
  } catch {
    return undefined;
  }
}

/**
 * Retries the same request (same key, same body) until it gets a definitive answer. Headers
 * may be made afresh per attempt: a webhook retried after a long outage must not be stale.
 */
async function definitive(
  method: string,
  path: string,
  body: unknown,
  headers: Record<string, string> | (() => Record<string, string>),
): Promise<Answer> {
  for (let attempt = 0; ; attempt++) {
    const answer = await send(method, path, body, typeof headers === 'function' ? headers() : headers);
    if (answer) return answer;
    counts.retries += 1;
    if (attempt > 2_000) throw new Error(`no definitive answer for ${method} ${path} after 2000 attempts`);
    await sleep(between(50, 300));
  }
}

/** A money-moving request; sometimes the same key is raced from two connections at once. */
async function moneyRequest(path: string, body: unknown, who: Party): Promise<Answer> {
  const headers = { authorization: `Bearer ${who.token}`, 'idempotency-key': randomUUID() };
  counts.operations += 1;
  const copies = Math.random() < 0.25 ? 2 : 1;
  if (copies > 1) counts.racedKeys += 1;
  const answers = await Promise.all(Array.from({ length: copies }, () => definitive('POST', path, body, headers)));
  // A replay answers exactly what the first answer said.
  for (const a of answers.slice(1)) {
    if (a.status !== answers[0]!.status || JSON.stringify(a.body) !== JSON.stringify(answers[0]!.body)) {
      violation(`key ${headers['idempotency-key']} on ${path} answered ${answers[0]!.status} ${JSON.stringify(answers[0]!.body)} and ${a.status} ${JSON.stringify(a.body)}`);
    }
  }
  // A late retry of the same key after the answer: the same answer again.
  if (Math.random() < 0.1) {
    const again = await definitive('POST', path, body, headers);
    if (again.status !== answers[0]!.status || JSON.stringify(again.body) !== JSON.stringify(answers[0]!.body)) {
      violation(`late retry of ${headers['idempotency-key']} on ${path} answered ${again.status} ${JSON.stringify(again.body)}, first ${answers[0]!.status} ${JSON.stringify(answers[0]!.body)}`);
    }
  }
  const answer = answers[0]!;
  if (answer.status < 300) counts.answered2xx += 1;
  else counts.answered4xx += 1;
  return answer;
}

function signedPost(path: string, header: string, secret: string, event: unknown): Promise<Answer> {
  const raw = JSON.stringify(event);
  return definitive('POST', path, raw, () => ({ [header]: signPayload(secret, raw, Math.floor(Date.now() / 1000)) }));
}

/** What the 2xx answers promise each wallet, to compare with the ledger at the end. */
const expected = new Map<string, number>();
const credit = (walletId: string, amount: number) => expected.set(walletId, (expected.get(walletId) ?? 0) + amount);
const transactions: string[] = [];
const payments: Array<{ id: string; payer: Party; merchant: Party; left: number }> = [];
const withdrawals: Array<{ id: string; who: Party; amount: number }> = [];

async function deposit(who: Party): Promise<void> {
  const amount = between(10_000, 200_000);
  const created = await moneyRequest('/wallet/add-money', { amount }, who);
  if (created.status !== 201) return violation(`add-money answered ${created.status}`);
  const paymentId = created.body.payment_id as string;
  const event = (type: string) => ({ id: `evt_${randomUUID()}`, type, data: { payment_id: paymentId, amount, currency: 'INR', gateway_reference: 'chaos' } });
  // Out of order: sometimes a failure arrives first (the customer then paid on a second try).
  if (Math.random() < 0.2) await signedPost('/webhooks/gateway', 'gateway-signature', SECRETS.GATEWAY_WEBHOOK_SECRET, event('payment.failed'));
  const success = event('payment.succeeded');
  // Duplicates, some of them concurrent; a late failure after the success changes nothing.
  const deliveries = await Promise.all(
    Array.from({ length: between(1, 3) }, () => signedPost('/webhooks/gateway', 'gateway-signature', SECRETS.GATEWAY_WEBHOOK_SECRET, success)),
  );
  counts.webhooks += deliveries.length;
  if (deliveries.some((d) => d.status !== 200)) return violation(`gateway webhook answered ${deliveries.map((d) => d.status).join(',')}`);
  if (Math.random() < 0.2) await signedPost('/webhooks/gateway', 'gateway-signature', SECRETS.GATEWAY_WEBHOOK_SECRET, event('payment.failed'));
  credit(who.walletId, amount);
}

async function transferBetween(from: Party, to: Party): Promise<void> {
  const amount = between(1, 30_000);
  const res = await moneyRequest('/wallet/transfer', { to: to.handle, amount, pin: PIN }, from);
  if (res.status === 201) {
    credit(from.walletId, -amount);
    credit(to.walletId, amount);
    transactions.push((res.body.transaction as { id: string }).id);
  } else if (res.body.code !== 'insufficient_funds') violation(`transfer answered ${res.status} ${String(res.body.code)}`);
}

async function payMerchant(from: Party, merchant: Party): Promise<void> {
  const amount = between(1, 20_000);
  const res = await moneyRequest('/wallet/pay', { merchant: merchant.handle, amount, pin: PIN }, from);
  if (res.status === 201) {
    credit(from.walletId, -amount);
    credit(merchant.walletId, amount);
    const id = (res.body.transaction as { id: string }).id;
    transactions.push(id);
    payments.push({ id, payer: from, merchant, left: amount });
  } else if (res.body.code !== 'insufficient_funds') violation(`pay answered ${res.status} ${String(res.body.code)}`);
}

async function refundOne(): Promise<void> {
  const payment = payments.find((p) => p.left > 0 && Math.random() < 0.3);
  if (!payment) return;
  // Sometimes more than is left: 422 refund_exceeds_payment must move nothing.
  const amount = Math.random() < 0.2 ? payment.left + 1 : between(1, payment.left);
  const res = await moneyRequest(`/merchant/payments/${payment.id}/refund`, { amount }, payment.merchant);
  if (res.status === 201) {
    payment.left -= amount;
    credit(payment.merchant.walletId, -amount);
    credit(payment.payer.walletId, amount);
  } else if (!['refund_exceeds_payment', 'insufficient_funds'].includes(String(res.body.code))) {
    violation(`refund answered ${res.status} ${String(res.body.code)}`);
  }
}

async function withdraw(who: Party, bankAccount: string): Promise<void> {
  const amount = between(1, 20_000);
  const res = await moneyRequest('/wallet/withdraw', { amount, pin: PIN, bank_account: bankAccount }, who);
  if (res.status === 202) withdrawals.push({ id: res.body.withdrawal_id as string, who, amount });
  else if (res.body.code !== 'insufficient_funds') violation(`withdraw answered ${res.status} ${String(res.body.code)}`);
}

/** The bank's answer for a withdrawal: delivered 1-3 times at once, then maybe contradicted. */
async function settle(w: { id: string; who: Party; amount: number }): Promise<void> {
  const outcome = Math.random() < 0.7 ? 'payout.succeeded' : 'payout.failed';
  const event = (type: string) => ({ id: `bank_${randomUUID()}`, type, data: { reference: w.id, amount: w.amount } });
  const first = event(outcome);
  const answers = await Promise.all(
    Array.from({ length: between(1, 3) }, () => signedPost('/webhooks/bank', 'bank-signature', SECRETS.BANK_WEBHOOK_SECRET, first)),
  );
  counts.callbacks += answers.length;
  if (answers.some((a) => a.status !== 200)) return violation(`bank callback answered ${answers.map((a) => a.status).join(',')}`);
  if (Math.random() < 0.2) {
    const late = await signedPost('/webhooks/bank', 'bank-signature', SECRETS.BANK_WEBHOOK_SECRET, event(outcome === 'payout.succeeded' ? 'payout.failed' : 'payout.succeeded'));
    counts.callbacks += 1;
    if (late.status >= 500) violation(`contradicting bank callback answered ${late.status}`);
  }
  if (outcome === 'payout.succeeded') credit(w.who.walletId, -w.amount);
}

class Service {
  private child: ChildProcess | undefined;
  readyTimes: number[] = [];

  constructor(private readonly env: Record<string, string>, private readonly logFile: string) {}

  async start(): Promise<void> {
    const started = Date.now();
    const out = openSync(this.logFile, 'a');
    this.child = spawn(process.execPath, [...serviceNodeFlags(), 'dist/src/main.js'], { env: { ...process.env, ...this.env }, stdio: ['ignore', out, out] });
    await this.waitReady(started);
  }

  async waitReady(since: number): Promise<void> {
    for (;;) {
      try {
        const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1_000) });
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() - since > 60_000) throw new Error('the service did not become ready within 60 s');
      await sleep(25);
    }
    this.readyTimes.push((Date.now() - since) / 1000);
  }

  kill(): void {
    this.child?.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child!.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'wallet-chaos-'));
  const pgPort = await freePort();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  let pg: EmbeddedPostgres | undefined = await startEmbeddedPostgres({ dataDir: join(work, 'pg'), port: pgPort, log: () => undefined });
  const databaseUrl = await ensureDatabase(pg.url, 'wallet_chaos');
  const service = new Service(
    {
      ...SECRETS,
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATABASE_URL: databaseUrl,
      DATA_DIR: join(work, 'data'),
      PUBLIC_URL: base,
      SANDBOX_BANK_MODE: 'manual',
      RATE_LIMITS_ENABLED: 'false',
      RECOVERY_INTERVAL_SECONDS: '2',
      RECONCILE_INTERVAL_SECONDS: '5',
      DAILY_OUTGOING_LIMIT_MINOR: '1000000000',
    },
    join(work, 'service.log'),
  );
  console.log(`chaos: ${KILLS} SIGKILLs, ${CLIENTS} clients, ${WALLETS} wallets; logs in ${work}`);
  const startedAt = Date.now();
  let code = 1;
  try {
    await service.start();
    const parties: Party[] = [];
    for (let i = 0; i < WALLETS + 2; i++) {
      const merchant = i >= WALLETS;
      const email = `chaos${i}.${randomBytes(3).toString('hex')}@example.com`;
      const reg = await definitive('POST', '/auth/register', {
        email,
        password: 'chaos password 1',
        pin: PIN,
        name: `Chaos ${i}`,
        ...(merchant ? { role: 'merchant', business_name: `Chaos Shop ${i}` } : {}),
      }, {});
      const login = await definitive('POST', '/auth/login', { email, password: 'chaos password 1' }, {});
      const wallet = reg.body.wallet as { id: string; handle: string };
      parties.push({ email, token: login.body.access_token as string, walletId: wallet.id, handle: wallet.handle, merchant });
    }
    const customers = parties.filter((p) => !p.merchant);
    const merchants = parties.filter((p) => p.merchant);
    const bankAccounts = new Map<string, string>();
    for (const c of customers) {
      const res = await definitive('POST', '/wallet/bank-accounts', { account_number: `9${between(10_000_000_000, 99_999_999_999)}`, ifsc: 'HDFC0001234', holder_name: 'Chaos' }, { authorization: `Bearer ${c.token}` });
      bankAccounts.set(c.walletId, res.body.id as string);
      await deposit(c);
    }

    // The killer: SIGKILL at random moments, restart at once, PostgreSQL restarted halfway.
    const killer = (async () => {
      for (let k = 0; k < KILLS; k++) {
        await sleep(between(700, 2_500));
        service.kill();
        counts.kills += 1;
        if (k === Math.floor(KILLS / 2)) {
          // PostgreSQL goes down and comes back while the service is down too; the service
          // must also survive it going away under its feet (next block).
          await pg!.stop();
          pg = await startEmbeddedPostgres({ dataDir: join(work, 'pg'), port: pgPort, log: () => undefined });
          counts.postgresRestarts += 1;
        }
        await service.start();
        if (k === Math.floor(KILLS / 3)) {
          // PostgreSQL restarted under a running service: it must come back ready by itself.
          await sleep(500);
          await pg!.stop();
          pg = await startEmbeddedPostgres({ dataDir: join(work, 'pg'), port: pgPort, log: () => undefined });
          counts.postgresRestarts += 1;
          await service.waitReady(Date.now());
        }
      }
      stopping = true;
    })();

    const client = async () => {
      while (!stopping) {
        const who = pick(customers);
        const roll = Math.random();
        if (roll < 0.1) await deposit(who);
        else if (roll < 0.5) await transferBetween(who, pick(customers.filter((c) => c !== who)));
        else if (roll < 0.75) await payMerchant(who, pick(merchants));
        else if (roll < 0.87) await refundOne();
        else await withdraw(who, bankAccounts.get(who.walletId)!);
      }
    };
    let clientsDone = false;
    const settler = async () => {
      // Until the last client has finished (its last withdrawal too), then the queue drains.
      while (!clientsDone || withdrawals.length > 0) {
        const w = withdrawals.shift();
        if (w) await settle(w);
        else await sleep(100);
      }
    };
    const settlers = [settler(), settler()];
    await Promise.all([killer, ...Array.from({ length: CLIENTS }, client)]);
    clientsDone = true;
    await Promise.all(settlers);
    const loadSeconds = (Date.now() - startedAt) / 1000;

    // Verification, from the database.
    await service.stop();
    const db = createPool(databaseUrl, 2);
    try {
      const { rows } = await db.query<{ id: string; balance: string; held: string }>(
        `SELECT w.id, a.balance::text, a.held::text FROM wallets w JOIN accounts a ON a.id = w.account_id WHERE w.id = ANY($1::uuid[])`,
        [parties.map((p) => p.walletId)],
      );
      for (const row of rows) {
        const want = expected.get(row.id) ?? 0;
        if (Number(row.balance) !== want) violation(`wallet ${row.id}: balance ${row.balance}, the 2xx answers add up to ${want}`);
        if (Number(row.held) !== 0) violation(`wallet ${row.id}: ${row.held} still held after every withdrawal was settled`);
      }
      const dangling = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM holds WHERE status = 'pending'`);
      if (dangling.rows[0]!.n !== '0') violation(`${dangling.rows[0]!.n} holds left pending`);
      const found = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM ledger_transactions WHERE id = ANY($1::uuid[])`, [transactions]);
      if (Number(found.rows[0]!.n) !== new Set(transactions).size) violation(`answered transactions missing from the ledger`);
      const result = await reconcile(db);
      for (const m of result.mismatches) violation(`reconciliation: ${JSON.stringify(m)}`);
      const slowest = Math.max(...service.readyTimes);
      if (slowest > READY_LIMIT_S) violation(`the service took ${slowest.toFixed(1)} s to be ready after a restart (limit ${READY_LIMIT_S} s)`);
      const report = {
        ...counts,
        load_seconds: Number(loadSeconds.toFixed(1)),
        ready_after_restart_seconds: {
          max: Number(slowest.toFixed(2)),
          median: Number([...service.readyTimes].sort((a, b) => a - b)[Math.floor(service.readyTimes.length / 2)]!.toFixed(2)),
        },
        ledger: { accounts: result.checked_accounts, transactions: result.checked_transactions, total_balance: result.total_balance },
      };
      console.log(JSON.stringify(report, null, 2));
      if (counts.kills < KILLS || counts.postgresRestarts < 1) violation('fewer crashes than asked for');
      if (counts.violations > 0) {
        console.error(`CHAOS FAILED: ${counts.violations} violation(s)`);
        for (const v of violations) console.error(`  - ${v}`);
        code = 1;
      } else {
        console.log(`chaos passed: ${counts.operations} operations, ${counts.kills} SIGKILLs, ${counts.postgresRestarts} PostgreSQL restarts, 0 violations`);
        code = 0;
      }
    } finally {
      await db.end();
    }
  } finally {
    service.kill();
    await pg?.stop();
    if (code === 0) rmSync(work, { recursive: true, force: true });
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
