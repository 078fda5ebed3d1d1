import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  assertInvariants,
  auth,
  balanceOf,
  deliverWebhook,
  newKey,
  registerUser,
  startApp,
  successEvent,
  transfer,
  type TestApp,
  type User,
} from './helpers.js';

type Op =
  | { kind: 'register' }
  | { kind: 'deposit'; user: number; amount: number; deliveries: number }
  | { kind: 'transfer'; from: number; to: number; amount: number; retry: boolean; wrongPin: boolean }
  | { kind: 'burst'; transfers: Array<{ from: number; to: number; amount: number }> };

const amount = fc.integer({ min: 1, max: 20_000 });
const index = fc.nat({ max: 50 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'register' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('deposit' as const), user: index, amount, deliveries: fc.integer({ min: 1, max: 3 }) }) },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('transfer' as const), from: index, to: index, amount, retry: fc.boolean(), wrongPin: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('burst' as const),
      transfers: fc.array(fc.record({ from: index, to: index, amount }), { minLength: 2, maxLength: 8 }),
    }),
  },
);

describe('property: random registrations, deposits and transfers match a simple model', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp();
  });
  after(async () => t.close());

  it('every balance matches the model and the ledger invariants hold', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), async (ops) => {
        const users: User[] = [await registerUser(t, { name: 'Prop' }), await registerUser(t, { name: 'Prop' })];
        const model = new Map<string, number>(users.map((u) => [u.id, 0]));
        const pick = (i: number) => users[i % users.length]!;

        for (const o of ops) {
          if (o.kind === 'register') {
            const u = await registerUser(t, { name: 'Prop' });
            users.push(u);
            model.set(u.id, 0);
          } else if (o.kind === 'deposit') {
            const u = pick(o.user);
            const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(u, newKey()), payload: { amount: o.amount } });
            assert.equal(res.statusCode, 201);
            const event = successEvent(res.json().payment_id, o.amount);
            for (let d = 0; d < o.deliveries; d++) assert.equal((await deliverWebhook(t, event)).statusCode, 200);
            model.set(u.id, model.get(u.id)! + o.amount);
          } else if (o.kind === 'transfer') {
            const from = pick(o.from);
            const to = pick(o.to);
            const key = newKey();
            const res = await transfer(t, from, to.wallet.handle, o.amount, key, o.wrongPin ? { pin: '0000' } : {});
            if (o.wrongPin && from.id !== to.id) {
              assert.equal(res.json().code, 'invalid_pin');
              // Clear the failure count so that later operations are not locked out.
              await t.db.query(`UPDATE users SET pin_failures = 0 WHERE id = $1`, [from.id]);
              continue;
            }
            if (from.id === to.id) {
              assert.equal(res.json().code, 'same_wallet');
            } else if (model.get(from.id)! < o.amount) {
              assert.equal(res.statusCode, 422);
              assert.equal(res.json().code, 'insufficient_funds');
            } else {
              assert.equal(res.statusCode, 201, res.body);
              model.set(from.id, model.get(from.id)! - o.amount);
              model.set(to.id, model.get(to.id)! + o.amount);
              assert.equal(res.json().balance, model.get(from.id));
            }
            if (o.retry) {
              const again = await transfer(t, from, to.wallet.handle, o.amount, key);
              if (from.id !== to.id && !o.wrongPin) {
                assert.equal(again.statusCode, res.statusCode);
                assert.equal(again.body, res.body);
              }
            }
          } else {
            // Concurrent transfers: the order is the database's, so the model learns it from the answers.
            const sent = o.transfers.map((x) => ({ from: pick(x.from), to: pick(x.to), amount: x.amount }));
            const answers = await Promise.all(sent.map((x) => transfer(t, x.from, x.to.wallet.handle, x.amount)));
            answers.forEach((res, i) => {
              const x = sent[i]!;
              if (res.statusCode === 201) {
                model.set(x.from.id, model.get(x.from.id)! - x.amount);
                model.set(x.to.id, model.get(x.to.id)! + x.amount);
              } else {
                assert.ok(['insufficient_funds', 'same_wallet'].includes(res.json().code), res.body);
              }
            });
            for (const [id, balance] of model) assert.ok(balance >= 0, `model balance of ${id} went below zero`);
          }
        }
        for (const u of users) assert.equal(await balanceOf(t, u), model.get(u.id), `balance of ${u.wallet.handle}`);
        await assertInvariants(t.db);
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 25) },
    );
  });
});
