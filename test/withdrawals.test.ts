import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { signPayload } from '../src/signatures.js';
import { addBank, assertInvariants, auth, balanceOf, fund, newKey, registerUser, snapshot, startApp, withdraw, type TestApp, type User } from './helpers.js';

async function wallet(t: TestApp, user: User) {
  return (await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(user) })).json() as { balance: number; available_balance: number; held_balance: number };
}

async function withdrawal(t: TestApp, user: User, id: string) {
  const res = await t.app.inject({ method: 'GET', url: `/wallet/withdrawals/${id}`, headers: auth(user) });
  assert.equal(res.statusCode, 200, res.body);
  return res.json();
}

async function bankPayout(base: string, id: string) {
  const res = await fetch(`${base}/sandbox/bank/payouts/${id}`);
  return { status: res.status, body: (await res.json()) as { status: string; submissions: number } };
}

async function complete(base: string, id: string, outcome: 'succeeded' | 'failed') {
  const res = await fetch(`${base}/sandbox/payouts/${id}/complete`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ outcome }),
  });
  return (await res.json()) as { webhook_status: number; webhook_response: { outcome: string } };
}

function bankCallback(t: TestApp, event: unknown, secret = t.config.bankWebhookSecret) {
  const body = JSON.stringify(event);
  return t.app.inject({
    method: 'POST',
    url: '/webhooks/bank',
    headers: { 'content-type': 'application/json', 'bank-signature': signPayload(secret, body, Math.floor(Date.now() / 1000)) },
    payload: body,
  });
}

async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function started(env: Record<string, string> = {}) {
  const t = await startApp(env);
  const base = await t.app.listen({ host: '127.0.0.1', port: 0 });
  return { t, base };
}

describe('bank accounts', () => {
  let t: TestApp;
  let user: User;
  before(async () => {
    t = await startApp();
    user = await registerUser(t, { name: 'Banker' });
  });
  after(async () => t.close());

  it('registers an account and only ever shows its last four digits', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/wallet/bank-accounts',
      headers: auth(user),
      payload: { account_number: '000111222333', ifsc: 'sbin0004321', holder_name: 'Banker' },
    });
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().account_number_last4, '2333');
    assert.equal(res.json().ifsc, 'SBIN0004321');
    assert.ok(!res.body.includes('000111222333'));
    const list = await t.app.inject({ method: 'GET', url: '/wallet/bank-accounts', headers: auth(user) });
    assert.equal(list.json().data.length, 1);
    assert.ok(!list.body.includes('000111222333'));
    const again = await t.app.inject({
      method: 'POST',
      url: '/wallet/bank-accounts',
      headers: auth(user),
      payload: { account_number: '000111222333', ifsc: 'SBIN0004321', holder_name: 'Banker' },
    });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().code, 'bank_account_exists');
  });

  for (const [what, payload] of [
    ['a short account number', { account_number: '12345', ifsc: 'HDFC0001234', holder_name: 'x' }],
    ['letters in the account number', { account_number: '12345678901a', ifsc: 'HDFC0001234', holder_name: 'x' }],
    ['a bad IFSC', { account_number: '123456789012', ifsc: 'HDFC1001234', holder_name: 'x' }],
    ['a numeric account number', { account_number: 123456789012, ifsc: 'HDFC0001234', holder_name: 'x' }],
    ['a missing holder', { account_number: '123456789012', ifsc: 'HDFC0001234' }],
  ] as const) {
    it(`refuses ${what} with 400`, async () => {
      const res = await t.app.inject({ method: 'POST', url: '/wallet/bank-accounts', headers: auth(user), payload });
      assert.equal(res.statusCode, 400);
      assert.equal(res.json().code, 'validation_failed');
    });
  }
});

describe('withdrawals, bank settled by hand', () => {
  let t: TestApp;
  let base: string;
  let user: User;
  let bank: string;
  before(async () => {
    ({ t, base } = await started());
    user = await registerUser(t, { name: 'Withdrawer' });
    bank = await addBank(t, user);
    await fund(t, user, 50_000);
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('holds at once, posts when the bank confirms; one id throughout; history shows each stage', async () => {
    const res = await withdraw(t, user, 20_000, bank);
    assert.equal(res.statusCode, 202, res.body);
    const { withdrawal_id: id, status, amount } = res.json();
    assert.equal(status, 'pending');
    assert.equal(amount, 20_000);
    assert.deepEqual(await wallet(t, user), { ...(await wallet(t, user)), balance: 50_000, held_balance: 20_000, available_balance: 30_000 });
    const pendingItem = (await t.app.inject({ method: 'GET', url: '/wallet/transactions?limit=1', headers: auth(user) })).json().data[0];
    assert.deepEqual([pendingItem.id, pendingItem.type, pendingItem.status, pendingItem.direction], [id, 'withdrawal', 'pending', 'debit']);
    assert.equal((await withdrawal(t, user, id)).status, 'pending');
    await eventually(async () => (await bankPayout(base, id)).status === 200, 'the payout to reach the bank');

    const done = await complete(base, id, 'succeeded');
    assert.equal(done.webhook_status, 200);
    assert.equal(done.webhook_response.outcome, 'posted');
    const after = await wallet(t, user);
    assert.equal(after.balance, 30_000);
    assert.equal(after.held_balance, 0);
    assert.equal(after.available_balance, 30_000);
    const w = await withdrawal(t, user, id);
    assert.equal(w.status, 'succeeded');
    assert.equal(w.failure_reason, null, 'a paid-out withdrawal has no failure reason');
    assert.equal(w.bank_account.account_number_last4, '9012');
    const items = (await t.app.inject({ method: 'GET', url: '/wallet/transactions?type=withdrawal', headers: auth(user) })).json().data;
    assert.equal(items.length, 1);
    assert.deepEqual([items[0].id, items[0].status, items[0].amount, items[0].balance_after], [id, 'posted', 20_000, 30_000]);
    const single = await t.app.inject({ method: 'GET', url: `/transactions/${id}`, headers: auth(user) });
    assert.equal(single.json().status, 'posted');
    // The bank answering again changes nothing.
    assert.equal((await complete(base, id, 'succeeded')).webhook_response.outcome, 'already_processed');
    assert.equal(await balanceOf(t, user), 30_000);
    assert.equal((await bankPayout(base, id)).body.submissions, 1);
  });

  it('releases the hold when the bank rejects: the money is back and history says failed', async () => {
    const before = await wallet(t, user);
    const id = (await withdraw(t, user, 5_000, bank)).json().withdrawal_id;
    assert.equal((await wallet(t, user)).available_balance, before.available_balance - 5_000);
    await eventually(async () => (await bankPayout(base, id)).status === 200, 'the payout to reach the bank');
    assert.equal((await complete(base, id, 'failed')).webhook_response.outcome, 'released');
    assert.deepEqual(await wallet(t, user), before);
    const w = await withdrawal(t, user, id);
    assert.equal(w.status, 'failed');
    assert.match(w.failure_reason, /account closed/);
    const item = (await t.app.inject({ method: 'GET', url: `/transactions/${id}`, headers: auth(user) })).json();
    assert.equal(item.status, 'failed');
    // A success after the release cannot move money: it is flagged for review instead.
    const late = await complete(base, id, 'succeeded');
    assert.equal(late.webhook_response.outcome, 'already_processed');
  });

  it('held money cannot be spent twice: transfers see only the available balance', async () => {
    const other = await registerUser(t, { name: 'Bystander' });
    const available = (await wallet(t, user)).available_balance;
    const id = (await withdraw(t, user, available, bank)).json().withdrawal_id;
    const spend = await t.app.inject({ method: 'POST', url: '/wallet/transfer', headers: auth(user, newKey()), payload: { to: other.wallet.handle, amount: 1, pin: user.pin } });
    assert.equal(spend.statusCode, 422);
    assert.equal(spend.json().code, 'insufficient_funds');
    const twice = await withdraw(t, user, 1, bank);
    assert.equal(twice.json().code, 'insufficient_funds');
    await eventually(async () => (await bankPayout(base, id)).status === 200, 'the payout to reach the bank');
    await complete(base, id, 'failed');
    assert.equal((await wallet(t, user)).available_balance, available);
  });

  it('concurrent withdrawals can hold only what is available; held equals the pending holds', async () => {
    const racer = await registerUser(t, { name: 'Racer' });
    const b = await addBank(t, racer, '555566667777');
    await fund(t, racer, 10_000);
    const answers = await Promise.all(Array.from({ length: 10 }, () => withdraw(t, racer, 3_000, b)));
    assert.equal(answers.filter((r) => r.statusCode === 202).length, 3, answers.map((r) => r.statusCode).join(','));
    for (const r of answers.filter((x) => x.statusCode !== 202)) assert.equal(r.json().code, 'insufficient_funds');
    const w = await wallet(t, racer);
    assert.deepEqual([w.balance, w.held_balance, w.available_balance], [10_000, 9_000, 1_000]);
    await assertInvariants(t.db);
  });

  it('replays a retried withdrawal and refuses a changed one', async () => {
    const key = newKey();
    const first = await withdraw(t, user, 100, bank, key);
    const before = await snapshot(t.db);
    const again = await withdraw(t, user, 100, bank, key);
    assert.equal(again.statusCode, 202);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(again.body, first.body);
    assert.equal((await snapshot(t.db)).balances, before.balances);
    assert.equal((await withdraw(t, user, 101, bank, key)).json().code, 'idempotency_key_reused');
  });

  it('refuses bad withdrawals and changes nothing', async () => {
    const stranger = await registerUser(t, { name: 'Stranger' });
    const theirs = await addBank(t, stranger, '999988887777');
    const before = await snapshot(t.db);
    const cases: Array<[Promise<{ statusCode: number; json: () => { code: string } }>, number, string]> = [
      [withdraw(t, user, 100, theirs), 404, 'bank_account_not_found'],
      [withdraw(t, user, 100, 'not-an-id'), 404, 'bank_account_not_found'],
      [withdraw(t, user, 0, bank), 400, 'validation_failed'],
      [withdraw(t, user, 1.5, bank), 400, 'validation_failed'],
      [withdraw(t, user, '100', bank), 400, 'validation_failed'],
      [withdraw(t, user, 10_000_001, bank), 422, 'limit_exceeded'],
      [withdraw(t, user, 100, bank, null), 400, 'idempotency_key_required'],
      [withdraw(t, user, 100, bank, newKey(), { pin: '0000' }), 403, 'invalid_pin'],
      [withdraw(t, user, 100, bank, newKey(), { ifsc: 'x' }), 400, 'validation_failed'],
    ];
    for (const [pending, status, code] of cases) {
      const res = await pending;
      assert.equal(res.statusCode, status, code);
      assert.equal(res.json().code, code);
    }
    await t.db.query(`UPDATE accounts SET pin_failures = 0 WHERE id = (SELECT account_id FROM wallets WHERE user_id = $1)`, [user.id]);
    const after = await snapshot(t.db);
    assert.equal(after.balances, before.balances);
    assert.equal(after.entries, before.entries);
    const other = await t.app.inject({ method: 'GET', url: `/wallet/withdrawals/00000000-0000-4000-8000-000000000000`, headers: auth(user) });
    assert.equal(other.statusCode, 404);
    assert.equal(other.json().code, 'withdrawal_not_found');
  });

  it('a frozen wallet cannot withdraw', async () => {
    const frozen = await registerUser(t, { name: 'Frozen Withdrawer' });
    const b = await addBank(t, frozen, '111122223333');
    await fund(t, frozen, 1_000);
    await t.db.query(`UPDATE wallets SET status = 'frozen' WHERE id = $1`, [frozen.wallet.id]);
    const res = await withdraw(t, frozen, 100, b);
    assert.equal(res.statusCode, 423);
    assert.equal(res.json().code, 'wallet_frozen');
  });

  it('verifies bank callbacks: bad signature 400, unknown withdrawal 404, wrong amount 422 and flagged', async () => {
    const id = (await withdraw(t, user, 300, bank)).json().withdrawal_id;
    const event = { id: 'bevt_x1', type: 'payout.succeeded', data: { reference: id, amount: 300 } };
    const forged = await bankCallback(t, event, 'a-forged-secret-that-is-long-enough-xx');
    assert.equal(forged.statusCode, 400);
    assert.equal(forged.json().code, 'invalid_signature');
    const unknown = await bankCallback(t, { ...event, data: { reference: '00000000-0000-4000-8000-000000000000', amount: 300 } });
    assert.equal(unknown.statusCode, 404);
    const wrong = await bankCallback(t, { ...event, data: { reference: id, amount: 301 } });
    assert.equal(wrong.statusCode, 422);
    assert.equal(wrong.json().code, 'amount_mismatch');
    const row = await t.db.query(`SELECT flagged, status FROM withdrawals WHERE id = $1`, [id]);
    assert.equal(row.rows[0].flagged, true);
    assert.notEqual(row.rows[0].status, 'succeeded');
  });

  it('the bank answering twice, even concurrently, posts once', async () => {
    const start = await balanceOf(t, user);
    const id = (await withdraw(t, user, 1_000, bank)).json().withdrawal_id;
    const event = { id: `bevt_${id}`, type: 'payout.succeeded', data: { reference: id, amount: 1_000 } };
    const answers = await Promise.all([
      ...Array.from({ length: 5 }, () => bankCallback(t, event)),
      ...Array.from({ length: 5 }, (_, i) => bankCallback(t, { ...event, id: `bevt_${id}_${i}` })),
    ]);
    assert.ok(answers.every((a) => a.statusCode === 200), answers.map((a) => a.body).join('\n'));
    assert.equal(answers.filter((a) => a.json().outcome === 'posted').length, 1);
    assert.equal(await balanceOf(t, user), start - 1_000);
  });
});

describe('withdrawals when things go wrong', () => {
  it('a crash between hold and payout: recovery submits once, and a second pass submits nothing', async () => {
    const { t, base } = await started({ PAYOUT_SUBMIT_IMMEDIATELY: 'false' });
    try {
      const user = await registerUser(t, { name: 'Crash' });
      const bank = await addBank(t, user);
      await fund(t, user, 10_000);
      const id = (await withdraw(t, user, 4_000, bank)).json().withdrawal_id;
      assert.equal((await bankPayout(base, id)).status, 404, 'the bank has not heard of it');
      const report = await t.ctx.jobs.runOnce({ olderThanSeconds: 0 });
      assert.equal(report?.withdrawals.submitted, 1);
      assert.deepEqual((await bankPayout(base, id)).body.submissions, 1);
      await t.ctx.jobs.runOnce({ olderThanSeconds: 0 });
      assert.equal((await bankPayout(base, id)).body.submissions, 1);
      assert.equal((await complete(base, id, 'succeeded')).webhook_response.outcome, 'posted');
      assert.equal(await balanceOf(t, user), 6_000);

      // Dying after the bank got the payout but before recording it: recovery asks first.
      const id2 = (await withdraw(t, user, 1_000, bank)).json().withdrawal_id;
      const direct = await fetch(`${base}/sandbox/bank/payouts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ reference: id2, amount: 1_000, currency: 'INR', account_number: '123456789012', ifsc: 'HDFC0001234' }),
      });
      assert.equal(direct.status, 202);
      await t.ctx.jobs.runOnce({ olderThanSeconds: 0 });
      assert.equal((await bankPayout(base, id2)).body.submissions, 1);
      const row = await t.db.query(`SELECT status FROM withdrawals WHERE id = $1`, [id2]);
      assert.equal(row.rows[0].status, 'submitted');
      await assertInvariants(t.db);
    } finally {
      await t.close();
    }
  });

  it('a bank that never answers: after the timeout the payout is cancelled and the hold released', async () => {
    const { t, base } = await started({ SANDBOX_BANK_MODE: 'never', WITHDRAWAL_TIMEOUT_SECONDS: '1' });
    try {
      const user = await registerUser(t, { name: 'Silent' });
      const bank = await addBank(t, user);
      await fund(t, user, 10_000);
      const id = (await withdraw(t, user, 7_000, bank)).json().withdrawal_id;
      await eventually(async () => (await t.db.query(`SELECT 1 FROM withdrawals WHERE id = $1 AND status = 'submitted'`, [id])).rowCount === 1, 'submission');
      const early = await t.ctx.jobs.runOnce({ olderThanSeconds: 0 });
      assert.equal(early?.withdrawals.timedOut, 0);
      await new Promise((r) => setTimeout(r, 1_100));
      const late = await t.ctx.jobs.runOnce({ olderThanSeconds: 0 });
      assert.equal(late?.withdrawals.timedOut, 1);
      assert.equal((await bankPayout(base, id)).body.status, 'cancelled');
      const w = await withdrawal(t, user, id);
      assert.equal(w.status, 'failed');
      assert.match(w.failure_reason, /did not settle the payout in time/);
      assert.deepEqual(await wallet(t, user), { ...(await wallet(t, user)), balance: 10_000, held_balance: 0, available_balance: 10_000 });
      // A success the bank sends anyway (it should not) is flagged, not posted.
      const late2 = await bankCallback(t, { id: 'bevt_late', type: 'payout.succeeded', data: { reference: id, amount: 7_000 } });
      assert.equal(late2.json().outcome, 'flagged');
      assert.equal(await balanceOf(t, user), 10_000);
      await assertInvariants(t.db);
    } finally {
      await t.close();
    }
  });

  it('a bank that settles on its own: succeed posts, fail releases, without anyone driving it', async () => {
    for (const [mode, expected] of [
      ['succeed', 'succeeded'],
      ['fail', 'failed'],
    ] as const) {
      const { t } = await started({ SANDBOX_BANK_MODE: mode });
      try {
        const user = await registerUser(t, { name: `Auto ${mode}` });
        const bank = await addBank(t, user);
        await fund(t, user, 2_000);
        const id = (await withdraw(t, user, 2_000, bank)).json().withdrawal_id;
        await eventually(async () => (await withdrawal(t, user, id)).status === expected, `withdrawal to be ${expected}`);
        assert.equal(await balanceOf(t, user), expected === 'succeeded' ? 0 : 2_000);
        assert.equal((await wallet(t, user)).held_balance, 0);
        await assertInvariants(t.db);
      } finally {
        await t.close();
      }
    }
  });
});

describe('payment attempt lifecycle', () => {
  it('a lost webhook: recovery asks the gateway and credits once', async () => {
    const { t, base } = await started({ PAYMENT_RECOVERY_AFTER_SECONDS: '0' });
    try {
      const user = await registerUser(t, { name: 'Lost Hook' });
      const created = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount: 3_000 } });
      const id = created.json().payment_id;
      const paid = await fetch(`${base}/sandbox/payments/${id}/complete`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ outcome: 'succeeded', deliver_webhook: false }),
      });
      assert.equal(((await paid.json()) as { webhook_status: number }).webhook_status, 0);
      assert.equal(await balanceOf(t, user), 0);
      const report = await t.ctx.jobs.runOnce();
      assert.equal(report?.payments.settled, 1);
      assert.equal(await balanceOf(t, user), 3_000);
      await t.ctx.jobs.runOnce();
      assert.equal(await balanceOf(t, user), 3_000);
      const declined = (await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount: 10 } })).json().payment_id;
      await fetch(`${base}/sandbox/payments/${declined}/complete`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ outcome: 'failed', deliver_webhook: false }),
      });
      await t.ctx.jobs.runOnce();
      const status = await t.app.inject({ method: 'GET', url: `/wallet/payments/${declined}`, headers: auth(user) });
      assert.equal(status.json().status, 'failed');
      await assertInvariants(t.db);
    } finally {
      await t.close();
    }
  });

  it('pending attempts expire; a success for an expired attempt still credits and is flagged', async () => {
    const { t, base } = await started({ PAYMENT_ATTEMPT_TTL_SECONDS: '1', PAYMENT_RECOVERY_AFTER_SECONDS: '3600' });
    try {
      const user = await registerUser(t, { name: 'Slow Payer' });
      const id = (await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount: 800 } })).json().payment_id;
      await new Promise((r) => setTimeout(r, 1_100));
      const report = await t.ctx.jobs.runOnce();
      assert.equal(report?.payments.expired, 1);
      assert.equal((await t.app.inject({ method: 'GET', url: `/wallet/payments/${id}`, headers: auth(user) })).json().status, 'expired');
      const late = await fetch(`${base}/sandbox/payments/${id}/complete`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ outcome: 'succeeded' }),
      });
      assert.equal(((await late.json()) as { webhook_response: { outcome: string } }).webhook_response.outcome, 'credited_after_expiry');
      const payment = (await t.app.inject({ method: 'GET', url: `/wallet/payments/${id}`, headers: auth(user) })).json();
      assert.equal(payment.status, 'succeeded');
      assert.equal(payment.flagged, true);
      assert.equal(await balanceOf(t, user), 800);
      await assertInvariants(t.db);
    } finally {
      await t.close();
    }
  });
});
