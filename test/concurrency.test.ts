import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
const TEST_ENGINE = { timeZone: 'UTC', pin: { pepper: 'unused-in-these-tests', maxFailures: 5, lockSeconds: 900 } };
import { assertInvariants, balanceOf, fund, newKey, registerUser, startApp, transfer, type TestApp } from './helpers.js';

describe('concurrency', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp();
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('100 concurrent transfers out of a wallet that can afford exactly 10: exactly 10 succeed, balance 0', async () => {
    const payer = await registerUser(t, { name: 'Payer' });
    const payees = await Promise.all(Array.from({ length: 5 }, (_, i) => registerUser(t, { name: `Payee ${i}` })));
    await fund(t, payer, 10 * 1_000);
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => transfer(t, payer, payees[i % payees.length]!.wallet.handle, 1_000)),
    );
    const ok = answers.filter((a) => a.statusCode === 201);
    const refused = answers.filter((a) => a.statusCode === 422);
    assert.equal(ok.length, 10);
    assert.equal(refused.length, 90);
    for (const r of refused) assert.equal(r.json().code, 'insufficient_funds');
    assert.equal(await balanceOf(t, payer), 0);
    // Every successful answer saw a distinct, non-negative balance: they were serialised.
    const after = ok.map((a) => a.json().balance as number).sort((x, y) => x - y);
    assert.deepEqual(after, [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
    await assertInvariants(t.db);
  });

  it('20 simultaneous requests with one idempotency key: money moves once and all answers agree', async () => {
    const a = await registerUser(t, { name: 'Keyholder' });
    const b = await registerUser(t, { name: 'Receiver' });
    await fund(t, a, 5_000);
    const key = newKey();
    const answers = await Promise.all(Array.from({ length: 20 }, () => transfer(t, a, b.wallet.handle, 1_234, key)));
    const ok = answers.filter((r) => r.statusCode === 201);
    const inUse = answers.filter((r) => r.statusCode === 409);
    assert.equal(ok.length + inUse.length, 20, answers.map((r) => r.statusCode).join(','));
    assert.ok(ok.length >= 1);
    for (const r of inUse) assert.equal(r.json().code, 'idempotency_key_in_use');
    const bodies = new Set(ok.map((r) => r.body));
    assert.equal(bodies.size, 1, 'every success carries the same body');
    // Once the first has finished, every retry replays the same answer.
    const retries = await Promise.all(Array.from({ length: 10 }, () => transfer(t, a, b.wallet.handle, 1_234, key)));
    for (const r of retries) {
      assert.equal(r.statusCode, 201);
      assert.equal(r.headers['idempotent-replayed'], 'true');
      assert.equal(r.body, ok[0]!.body);
    }
    assert.equal(await balanceOf(t, a), 5_000 - 1_234);
    assert.equal(await balanceOf(t, b), 1_234);
  });

  it('A→B and B→A at the same time in a loop: no deadlock surfaces, money is conserved', async () => {
    const a = await registerUser(t, { name: 'Ping' });
    const b = await registerUser(t, { name: 'Pong' });
    await fund(t, a, 50_000);
    await fund(t, b, 50_000);
    const statuses: number[] = [];
    for (let round = 0; round < 25; round++) {
      const batch = await Promise.all([
        ...Array.from({ length: 4 }, () => transfer(t, a, b.wallet.handle, 700)),
        ...Array.from({ length: 4 }, () => transfer(t, b, a.wallet.handle, 900)),
      ]);
      statuses.push(...batch.map((r) => r.statusCode));
    }
    assert.ok(statuses.every((s) => s === 201 || s === 422), `unexpected statuses: ${[...new Set(statuses)].join(',')}`);
    assert.equal((await balanceOf(t, a)) + (await balanceOf(t, b)), 100_000);
  });

  it('the same key raced through two engines on one database (two processes) moves money once', async () => {
    const second = await import('../src/ledger/engine.js');
    const a = await registerUser(t, { name: 'Twin' });
    const b = await registerUser(t, { name: 'Twin Receiver' });
    await fund(t, a, 10_000);
    const ids = await t.db.query<{ account_id: number; handle: string }>(
      `SELECT account_id, handle FROM wallets WHERE id = ANY($1::uuid[]) ORDER BY handle = $2 DESC`,
      [[a.wallet.id, b.wallet.id], a.wallet.handle],
    );
    const [from, to] = ids.rows.map((r) => r.account_id);
    const engines = [new second.LedgerEngine(t.db, TEST_ENGINE), new second.LedgerEngine(t.db, TEST_ENGINE)];
    const claim = { principal: `user:${a.id}`, key: newKey(), requestHash: Buffer.from('same request') };
    const render = (o: { ok: boolean }) => ({ statusCode: o.ok ? 201 : 422, body: { ok: o.ok } });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        engines[i % 2]!.post({
          type: 'transfer',
          legs: [
            { accountId: from!, amount: -2_500 },
            { accountId: to!, amount: 2_500 },
          ],
          idempotency: { ...claim, render },
        }),
      ),
    );
    const applied = results.filter((r) => r.kind === 'applied');
    assert.equal(applied.length, 1, JSON.stringify(results.map((r) => r.kind)));
    assert.ok(results.every((r) => r.kind === 'applied' || r.kind === 'replayed'));
    assert.equal(await balanceOf(t, a), 7_500);
  });
});
