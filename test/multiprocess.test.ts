import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { SECRETS, assertInvariants, createTestDatabase } from './helpers.js';
import { createPool, type Db } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { freePort } from './free-port.js';

async function startService(databaseUrl: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...SECRETS, NODE_ENV: 'test', DATABASE_URL: databaseUrl, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', RECOVERY_INTERVAL_SECONDS: '0' },
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`${url}/readyz`).then((r) => r.ok).catch(() => false)) === true) return { url, child };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('service did not start');
}

async function call(url: string, path: string, init: { method?: string; token?: string; key?: string; body?: unknown } = {}) {
  const res = await fetch(`${url}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
      ...(init.key ? { 'idempotency-key': init.key } : {}),
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

describe('two service processes on one database', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let services: Array<{ url: string; child: ChildProcess }>;

  before(async () => {
    const database = await createTestDatabase();
    drop = database.drop;
    db = createPool(database.url, 4);
    await migrate(db);
    services = await Promise.all([startService(database.url), startService(database.url)]);
  });
  after(async () => {
    for (const s of services ?? []) s.child.kill('SIGTERM');
    await Promise.all((services ?? []).map((s) => (s.child.exitCode === null ? new Promise((r) => s.child.once('exit', r)) : undefined)));
    await db.end();
    await drop();
  });

  it('concurrent transfers, payments, retries and logouts through both stay exactly right', async () => {
    const [a, b] = services.map((s) => s.url) as [string, string];
    const users: Array<{ token: string; handle: string; email: string }> = [];
    for (let i = 0; i < 8; i++) {
      const email = `multi.${i}.${Date.now()}@example.com`;
      const reg = await call(i % 2 ? a : b, '/auth/register', { method: 'POST', body: { email, password: 'multi process pw', pin: '1234', name: `Multi ${i}` } });
      assert.equal(reg.status, 201);
      const login = await call(i % 2 ? b : a, '/auth/login', { method: 'POST', body: { email, password: 'multi process pw' } });
      users.push({ token: login.body.access_token, handle: reg.body.wallet.handle, email });
      const paid = await call(a, '/wallet/add-money', { method: 'POST', token: login.body.access_token, key: `fund-${i}`, body: { amount: 10_000 } });
      const done = await call(b, `/sandbox/payments/${paid.body.payment_id}/complete`, { method: 'POST', body: { outcome: 'succeeded' } });
      assert.equal(done.body.webhook_response.outcome, 'credited');
    }

    // 400 transfers of random amounts between random users, sent to both processes at once;
    // every fourth is sent twice, once to each process, with the same key.
    const sent: Array<Promise<{ status: number; body: { balance?: number; code?: string } }>> = [];
    const plan: Array<{ from: number; to: number; amount: number; key: string }> = [];
    for (let i = 0; i < 400; i++) {
      const from = Math.floor(Math.random() * users.length);
      let to = Math.floor(Math.random() * (users.length - 1));
      if (to >= from) to++;
      plan.push({ from, to, amount: 1 + Math.floor(Math.random() * 900), key: `multi-${i}` });
    }
    for (const [i, p] of plan.entries()) {
      const body = { to: users[p.to]!.handle, amount: p.amount, pin: '1234' };
      sent.push(call(i % 2 ? a : b, '/wallet/transfer', { method: 'POST', token: users[p.from]!.token, key: p.key, body }));
      if (i % 4 === 0) sent.push(call(i % 2 ? b : a, '/wallet/transfer', { method: 'POST', token: users[p.from]!.token, key: p.key, body }));
    }
    const answers = await Promise.all(sent);
    for (const r of answers) assert.ok([201, 409, 422].includes(r.status), JSON.stringify(r.body));
    for (const r of answers.filter((x) => x.status === 422)) assert.equal(r.body.code, 'insufficient_funds');

    // Each key moved money at most once, and balances equal deposits minus what moved.
    const moved = await db.query<{ key: string; n: number }>(
      `SELECT key, count(*)::int AS n FROM idempotency_keys WHERE key LIKE 'multi-%' AND status_code = 201 GROUP BY key`,
    );
    for (const r of moved.rows) assert.equal(r.n, 1);
    const applied = new Set(moved.rows.map((r) => r.key));
    const expected = users.map(() => 10_000);
    for (const p of plan) {
      if (!applied.has(p.key)) continue;
      expected[p.from]! -= p.amount;
      expected[p.to]! += p.amount;
    }
    for (const [i, u] of users.entries()) {
      const balance = await call(i % 2 ? a : b, '/wallet/balance', { token: u.token });
      assert.equal(balance.body.balance, expected[i], `balance of ${u.handle}`);
    }

    // A logout through one process ends the session in the other within the poll interval.
    assert.equal((await call(a, '/auth/logout', { method: 'POST', token: users[0]!.token })).status, 204);
    assert.equal((await call(a, '/me', { token: users[0]!.token })).status, 401);
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal((await call(b, '/me', { token: users[0]!.token })).status, 401);
    await assertInvariants(db);
  });
});
