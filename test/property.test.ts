import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { signPayload } from '../src/signatures.js';
import {
  assertInvariants,
  auth,
  createAdmin,
  createCampaign,
  deliverWebhook,
  fundPool,
  newKey,
  pay,
  refund,
  registerUser,
  startApp,
  successEvent,
  transfer,
  type TestApp,
  type User,
} from './helpers.js';

const FEE_BPS = 150;
const CASHBACK = { bps: 1_000, cap: 300 };

type Op =
  | { kind: 'register' }
  | { kind: 'deposit'; user: number; amount: number; deliveries: number }
  | { kind: 'transfer'; from: number; to: number; amount: number; retry: boolean; wrongPin: boolean }
  | { kind: 'burst'; transfers: Array<{ from: number; to: number; amount: number }> }
  | { kind: 'pay'; user: number; merchant: number; amount: number; retry: boolean }
  | { kind: 'refund'; payment: number; amount: number | null }
  | { kind: 'withdraw'; user: number; amount: number; outcome: 'succeeded' | 'failed' | 'pending'; duplicateCallback: boolean };

const amount = fc.integer({ min: 1, max: 20_000 });
const index = fc.nat({ max: 50 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'register' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('deposit' as const), user: index, amount, deliveries: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('transfer' as const), from: index, to: index, amount, retry: fc.boolean(), wrongPin: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('burst' as const),
      transfers: fc.array(fc.record({ from: index, to: index, amount }), { minLength: 2, maxLength: 8 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('pay' as const), user: index, merchant: index, amount, retry: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('refund' as const), payment: index, amount: fc.option(amount, { nil: null }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('withdraw' as const),
      user: index,
      amount,
      outcome: fc.constantFrom('succeeded' as const, 'failed' as const, 'pending' as const),
      duplicateCallback: fc.boolean(),
    }),
  },
);

interface Account {
  balance: number;
  held: number;
}

interface Payment {
  id: string;
  customer: User;
  merchant: User;
  amount: number;
  refunded: number;
  cashback: number;
  reversed: number;
}

describe('property: random money movements match a simple model', () => {
  let t: TestApp;
  let admin: { token: string };
  before(async () => {
    t = await startApp({ MERCHANT_FEE_BPS: String(FEE_BPS), PAYOUT_SUBMIT_IMMEDIATELY: 'false' });
    admin = await createAdmin(t);
  });
  after(async () => t.close());

  const systemBalance = async (code: string) =>
    (await t.db.query<{ balance: number }>(`SELECT balance FROM accounts WHERE code = $1`, [code])).rows[0]!.balance;

  const bankCallback = (reference: string, amount: number, type: string, id = newKey()) => {
    const body = JSON.stringify({ id, type, data: { reference, amount } });
    return t.app.inject({
      method: 'POST',
      url: '/webhooks/bank',
      headers: { 'content-type': 'application/json', 'bank-signature': signPayload(t.config.bankWebhookSecret, body, Math.floor(Date.now() / 1000)) },
      payload: body,
    });
  };

  it('balances, holds, fees, the cashback pool and the ledger invariants all agree with the model', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), fc.integer({ min: 0, max: 20_000 }), async (ops, poolFunding) => {
        const users: User[] = [await registerUser(t, { name: 'Prop' }), await registerUser(t, { name: 'Prop' })];
        const merchants: User[] = [
          await registerUser(t, { role: 'merchant', businessName: 'Prop Shop' }),
          await registerUser(t, { role: 'merchant', businessName: 'Prop Mart' }),
        ];
        // Every run has its own cashback campaign for its first merchant, and tops up the pool.
        const campaignBudget = 2_000;
        await createCampaign(t, admin, { merchant: merchants[0]!.wallet.handle, percent_bps: CASHBACK.bps, cap_per_payment: CASHBACK.cap, budget: campaignBudget });
        if (poolFunding > 0) await fundPool(t, admin, poolFunding);
        let pool = await systemBalance('cashback_pool');
        let budgetLeft = campaignBudget;
        const feesAtStart = await systemBalance('fees');
        let fees = 0;
        const bank = new Map<string, string>();
        const model = new Map<string, Account>([...users, ...merchants].map((u) => [u.id, { balance: 0, held: 0 }]));
        const payments: Payment[] = [];
        const pick = (i: number) => users[i % users.length]!;
        const acct = (u: User) => model.get(u.id)!;
        const available = (u: User) => acct(u).balance - acct(u).held;

        for (const o of ops) {
          if (o.kind === 'register') {
            const u = await registerUser(t, { name: 'Prop' });
            users.push(u);
            model.set(u.id, { balance: 0, held: 0 });
          } else if (o.kind === 'deposit') {
            const u = pick(o.user);
            const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(u, newKey()), payload: { amount: o.amount } });
            assert.equal(res.statusCode, 201);
            const event = successEvent(res.json().payment_id, o.amount);
            for (let d = 0; d < o.deliveries; d++) assert.equal((await deliverWebhook(t, event)).statusCode, 200);
            acct(u).balance += o.amount;
          } else if (o.kind === 'transfer') {
            const from = pick(o.from);
            const to = pick(o.to);
            const key = newKey();
            const res = await transfer(t, from, to.wallet.handle, o.amount, key, o.wrongPin ? { pin: '0000' } : {});
            if (from.id === to.id) {
              assert.equal(res.json().code, 'same_wallet');
            } else if (o.wrongPin) {
              assert.equal(res.json().code, 'invalid_pin');
              await t.db.query(`UPDATE accounts SET pin_failures = 0 WHERE id = (SELECT account_id FROM wallets WHERE user_id = $1)`, [from.id]);
              continue;
            } else if (available(from) < o.amount) {
              assert.equal(res.json().code, 'insufficient_funds');
            } else {
              assert.equal(res.statusCode, 201, res.body);
              acct(from).balance -= o.amount;
              acct(to).balance += o.amount;
              assert.equal(res.json().balance, acct(from).balance);
            }
            if (o.retry && from.id !== to.id) {
              const again = await transfer(t, from, to.wallet.handle, o.amount, key);
              assert.equal(again.statusCode, res.statusCode);
              assert.equal(again.body, res.body);
            }
          } else if (o.kind === 'burst') {
            // Concurrent transfers: the order is the database's, so the model learns it from the answers.
            const sent = o.transfers.map((x) => ({ from: pick(x.from), to: pick(x.to), amount: x.amount }));
            const answers = await Promise.all(sent.map((x) => transfer(t, x.from, x.to.wallet.handle, x.amount)));
            answers.forEach((res, i) => {
              const x = sent[i]!;
              if (res.statusCode === 201) {
                acct(x.from).balance -= x.amount;
                acct(x.to).balance += x.amount;
              } else {
                assert.ok(['insufficient_funds', 'same_wallet'].includes(res.json().code), res.body);
              }
            });
            for (const u of users) assert.ok(available(u) >= 0, 'the model never lets available money go below zero');
          } else if (o.kind === 'pay') {
            const customer = pick(o.user);
            const merchant = merchants[o.merchant % merchants.length]!;
            const key = newKey();
            const res = await pay(t, customer, merchant.wallet.handle, o.amount, key);
            if (available(customer) < o.amount) {
              assert.equal(res.json().code, 'insufficient_funds');
              continue;
            }
            assert.equal(res.statusCode, 201, res.body);
            const fee = Math.floor((o.amount * FEE_BPS) / 10_000);
            acct(customer).balance -= o.amount;
            acct(merchant).balance += o.amount - fee;
            fees += fee;
            let cashback = 0;
            if (merchant === merchants[0] && budgetLeft > 0) {
              const due = Math.min(Math.floor((o.amount * CASHBACK.bps) / 10_000), CASHBACK.cap, budgetLeft);
              if (due > 0 && pool >= due) cashback = due;
            }
            assert.equal(res.json().cashback?.amount ?? 0, cashback, res.body);
            acct(customer).balance += cashback;
            pool -= cashback;
            budgetLeft -= cashback;
            payments.push({ id: res.json().transaction.id, customer, merchant, amount: o.amount, refunded: 0, cashback, reversed: 0 });
            if (o.retry) assert.equal((await pay(t, customer, merchant.wallet.handle, o.amount, key)).body, res.body);
          } else if (o.kind === 'refund') {
            if (payments.length === 0) continue;
            const p = payments[o.payment % payments.length]!;
            const res = await refund(t, p.merchant, p.id, o.amount === null ? undefined : { amount: o.amount });
            const refundable = p.amount - p.refunded;
            const amount = o.amount ?? refundable;
            if (amount > refundable || refundable === 0) {
              assert.equal(res.json().code, 'refund_exceeds_payment', res.body);
            } else if (available(p.merchant) < amount) {
              assert.equal(res.json().code, 'insufficient_funds', res.body);
            } else {
              assert.equal(res.statusCode, 201, res.body);
              const refundedAfter = p.refunded + amount;
              const target = refundedAfter >= p.amount ? p.cashback : Math.floor((p.cashback * refundedAfter) / p.amount);
              const reversal = target - p.reversed;
              assert.equal(res.json().refund.cashback_reversed, reversal);
              acct(p.merchant).balance -= amount;
              acct(p.customer).balance += amount - reversal;
              pool += reversal;
              p.refunded = refundedAfter;
              p.reversed = target;
            }
          } else {
            const u = pick(o.user);
            if (!bank.has(u.id)) {
              const added = await t.app.inject({
                method: 'POST',
                url: '/wallet/bank-accounts',
                headers: auth(u),
                payload: { account_number: '123456789012', ifsc: 'HDFC0001234', holder_name: 'Prop' },
              });
              bank.set(u.id, added.json().id);
            }
            const res = await t.app.inject({
              method: 'POST',
              url: '/wallet/withdraw',
              headers: auth(u, newKey()),
              payload: { amount: o.amount, pin: u.pin, bank_account: bank.get(u.id) },
            });
            if (available(u) < o.amount) {
              assert.equal(res.json().code, 'insufficient_funds');
              continue;
            }
            assert.equal(res.statusCode, 202, res.body);
            acct(u).held += o.amount;
            if (o.outcome === 'pending') continue;
            const id = res.json().withdrawal_id;
            const type = o.outcome === 'succeeded' ? 'payout.succeeded' : 'payout.failed';
            for (let d = 0; d < (o.duplicateCallback ? 2 : 1); d++) assert.equal((await bankCallback(id, o.amount, type)).statusCode, 200);
            acct(u).held -= o.amount;
            if (o.outcome === 'succeeded') acct(u).balance -= o.amount;
          }
        }
        for (const u of [...users, ...merchants]) {
          const w = (await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(u) })).json();
          assert.deepEqual(
            { balance: w.balance, held: w.held_balance, available: w.available_balance },
            { balance: acct(u).balance, held: acct(u).held, available: available(u) },
            `wallet of ${u.wallet.handle}`,
          );
        }
        assert.equal(await systemBalance('cashback_pool'), pool);
        assert.equal((await systemBalance('fees')) - feesAtStart, fees);
        await assertInvariants(t.db);
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 25) },
    );
  });
});
