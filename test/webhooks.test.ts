import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertInvariants,
  auth,
  balanceOf,
  deliverWebhook,
  newKey,
  registerUser,
  snapshot,
  startApp,
  successEvent,
  type TestApp,
  type User,
} from './helpers.js';

async function attempt(t: TestApp, user: User, amount: number): Promise<string> {
  const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount } });
  assert.equal(res.statusCode, 201, res.body);
  return res.json().payment_id;
}

async function paymentOf(t: TestApp, user: User, id: string) {
  const res = await t.app.inject({ method: 'GET', url: `/wallet/payments/${id}`, headers: auth(user) });
  assert.equal(res.statusCode, 200, res.body);
  return res.json();
}

describe('add money and the gateway webhook', () => {
  let t: TestApp;
  let user: User;
  before(async () => {
    t = await startApp();
    user = await registerUser(t, { name: 'Depositor' });
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('creates a pending payment attempt with a checkout url, and moves no money', async () => {
    const before = await snapshot(t.db);
    const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount: 25_000 } });
    assert.equal(res.statusCode, 201);
    const body = res.json();
    assert.equal(body.status, 'pending');
    assert.equal(body.amount, 25_000);
    assert.equal(body.currency, 'INR');
    assert.match(body.checkout_url, new RegExp(`/sandbox/checkout/${body.payment_id}$`));
    const after = await snapshot(t.db);
    assert.equal(after.entries, before.entries);
    assert.equal(after.payments, before.payments + 1);
    assert.equal((await paymentOf(t, user, body.payment_id)).status, 'pending');
  });

  it('replays add-money with the same key instead of creating a second attempt', async () => {
    const key = newKey();
    const first = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, key), payload: { amount: 100 } });
    const before = await snapshot(t.db);
    const again = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, key), payload: { amount: 100 } });
    assert.equal(again.statusCode, 201);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.json(), first.json());
    assert.deepEqual(await snapshot(t.db), before);
    const reused = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, key), payload: { amount: 101 } });
    assert.equal(reused.statusCode, 422);
    assert.equal(reused.json().code, 'idempotency_key_reused');
  });

  it('20 concurrent add-money requests with one key create one payment attempt', async () => {
    const key = newKey();
    const before = await snapshot(t.db);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, key), payload: { amount: 777 } })),
    );
    const ok = answers.filter((r) => r.statusCode === 201);
    assert.equal(ok.length + answers.filter((r) => r.statusCode === 409).length, 20);
    assert.equal(new Set(ok.map((r) => r.json().payment_id)).size, 1);
    assert.equal((await snapshot(t.db)).payments, before.payments + 1);
  });

  for (const [what, payload, code] of [
    ['a zero amount', { amount: 0 }, 'validation_failed'],
    ['a string amount', { amount: '100' }, 'validation_failed'],
    ['a fractional amount', { amount: 1.25 }, 'validation_failed'],
    ['an unknown field', { amount: 100, currency: 'USD' }, 'validation_failed'],
    ['an amount over the maximum', { amount: 10_000_001 }, 'limit_exceeded'],
  ] as const) {
    it(`refuses add-money with ${what} and changes nothing`, async () => {
      const before = await snapshot(t.db);
      const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload });
      assert.equal(res.json().code, code);
      assert.ok(res.statusCode === 400 || res.statusCode === 422);
      assert.deepEqual(await snapshot(t.db), before);
    });
  }

  it('requires an Idempotency-Key on add-money', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user), payload: { amount: 100 } });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().code, 'idempotency_key_required');
  });

  it('credits a signed success once; later deliveries answer 200 and change nothing', async () => {
    const id = await attempt(t, user, 5_000);
    const start = await balanceOf(t, user);
    const event = successEvent(id, 5_000);
    const first = await deliverWebhook(t, event);
    assert.equal(first.statusCode, 200);
    assert.equal(first.json().outcome, 'credited');
    assert.equal(await balanceOf(t, user), start + 5_000);
    const before = await snapshot(t.db);
    const again = await deliverWebhook(t, event);
    assert.equal(again.statusCode, 200);
    assert.equal(again.json().outcome, 'already_processed');
    const other = await deliverWebhook(t, successEvent(id, 5_000));
    assert.equal(other.statusCode, 200);
    assert.equal(other.json().outcome, 'already_processed');
    const after = await snapshot(t.db);
    assert.equal(after.entries, before.entries);
    assert.equal(after.balances, before.balances);
    const payment = await paymentOf(t, user, id);
    assert.equal(payment.status, 'succeeded');
    assert.ok(payment.transaction_id);
    const history = await t.app.inject({ method: 'GET', url: `/transactions/${payment.transaction_id}`, headers: auth(user) });
    assert.equal(history.json().type, 'deposit');
    assert.equal(history.json().direction, 'credit');
  });

  it('the same success event delivered 10 times concurrently is credited once', async () => {
    const id = await attempt(t, user, 7_000);
    const start = await balanceOf(t, user);
    const event = successEvent(id, 7_000);
    const answers = await Promise.all(Array.from({ length: 10 }, () => deliverWebhook(t, event)));
    assert.ok(answers.every((a) => a.statusCode === 200), answers.map((a) => a.body).join('\n'));
    assert.equal(answers.filter((a) => a.json().outcome === 'credited').length, 1);
    assert.equal(await balanceOf(t, user), start + 7_000);
  });

  it('10 different success events for one payment delivered concurrently credit once', async () => {
    const id = await attempt(t, user, 3_000);
    const start = await balanceOf(t, user);
    const answers = await Promise.all(Array.from({ length: 10 }, () => deliverWebhook(t, successEvent(id, 3_000))));
    assert.equal(answers.filter((a) => a.json().outcome === 'credited').length, 1);
    assert.equal(await balanceOf(t, user), start + 3_000);
  });

  it('refuses an amount or currency mismatch with 422, credits nothing, flags the attempt', async () => {
    const id = await attempt(t, user, 4_000);
    const before = await snapshot(t.db);
    const res = await deliverWebhook(t, successEvent(id, 4_001));
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().code, 'amount_mismatch');
    const wrongCurrency = await deliverWebhook(t, { ...successEvent(id, 4_000), data: { payment_id: id, amount: 4_000, currency: 'USD' } });
    assert.equal(wrongCurrency.statusCode, 422);
    const after = await snapshot(t.db);
    assert.equal(after.entries, before.entries);
    assert.equal(after.balances, before.balances);
    const payment = await paymentOf(t, user, id);
    assert.equal(payment.status, 'pending');
    assert.equal(payment.flagged, true);
  });

  it('a failure then a success credits once (the customer paid on a second try)', async () => {
    const id = await attempt(t, user, 1_500);
    const start = await balanceOf(t, user);
    const failed = await deliverWebhook(t, { id: `evt_f_${id}`, type: 'payment.failed', data: { payment_id: id, amount: 1_500, currency: 'INR' } });
    assert.equal(failed.json().outcome, 'marked_failed');
    assert.equal((await paymentOf(t, user, id)).status, 'failed');
    assert.equal(await balanceOf(t, user), start);
    const ok = await deliverWebhook(t, successEvent(id, 1_500));
    assert.equal(ok.json().outcome, 'credited');
    assert.equal((await paymentOf(t, user, id)).status, 'succeeded');
    assert.equal(await balanceOf(t, user), start + 1_500);
  });

  it('a failure after a success changes nothing', async () => {
    const id = await attempt(t, user, 900);
    await deliverWebhook(t, successEvent(id, 900));
    const before = await snapshot(t.db);
    const late = await deliverWebhook(t, { id: `evt_late_${id}`, type: 'payment.failed', data: { payment_id: id, amount: 900, currency: 'INR' } });
    assert.equal(late.statusCode, 200);
    assert.equal(late.json().outcome, 'ignored');
    assert.equal((await paymentOf(t, user, id)).status, 'succeeded');
    const after = await snapshot(t.db);
    assert.equal(after.balances, before.balances);
  });

  it('refuses bad, missing, stale and wrong-secret signatures with 400 invalid_signature; nothing changes', async () => {
    const id = await attempt(t, user, 800);
    const event = successEvent(id, 800);
    const before = await snapshot(t.db);
    const cases = [
      await deliverWebhook(t, event, { secret: 'another-secret-that-is-long-enough-0000' }),
      await deliverWebhook(t, event, { timestamp: Math.floor(Date.now() / 1000) - 301 }),
      await deliverWebhook(t, event, { timestamp: Math.floor(Date.now() / 1000) + 301 }),
      await t.app.inject({ method: 'POST', url: '/webhooks/gateway', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(event) }),
      await t.app.inject({
        method: 'POST',
        url: '/webhooks/gateway',
        headers: { 'content-type': 'application/json', 'gateway-signature': 't=abc,v1=zz' },
        payload: JSON.stringify(event),
      }),
    ];
    // A body changed after signing fails too.
    const signed = JSON.stringify(event);
    const tampered = await t.app.inject({
      method: 'POST',
      url: '/webhooks/gateway',
      headers: {
        'content-type': 'application/json',
        'gateway-signature': (await import('../src/signatures.js')).signPayload(t.config.gatewayWebhookSecret, signed, Math.floor(Date.now() / 1000)),
      },
      payload: signed.replace('"amount":800', '"amount":8000'),
    });
    cases.push(tampered);
    for (const res of cases) {
      assert.equal(res.statusCode, 400, res.body);
      assert.equal(res.json().code, 'invalid_signature');
    }
    assert.deepEqual(await snapshot(t.db), before);
    assert.equal((await paymentOf(t, user, id)).status, 'pending');
  });

  it('answers 404 payment_not_found for an unknown payment and 400 for a malformed event', async () => {
    const unknown = await deliverWebhook(t, successEvent('00000000-0000-4000-8000-000000000000', 100));
    assert.equal(unknown.statusCode, 404);
    assert.equal(unknown.json().code, 'payment_not_found');
    const malformed = await deliverWebhook(t, { id: 'evt_x', type: 'payment.refunded', data: {} });
    assert.equal(malformed.statusCode, 400);
    assert.equal(malformed.json().code, 'validation_failed');
    const notJson = await deliverWebhook(t, undefined, { raw: '{not json' });
    assert.equal(notJson.statusCode, 400);
  });

  it('shows a payment only to its owner', async () => {
    const id = await attempt(t, user, 100);
    const other = await registerUser(t, { name: 'Stranger' });
    for (const path of [`/wallet/payments/${id}`, '/wallet/payments/not-a-uuid', '/wallet/payments/00000000-0000-4000-8000-000000000000']) {
      const res = await t.app.inject({ method: 'GET', url: path, headers: auth(other) });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().code, 'payment_not_found');
    }
  });

  it('credits a deposit to a frozen wallet (the money has left the bank) but refuses new attempts', async () => {
    const frozen = await registerUser(t, { name: 'Frozen Depositor' });
    const id = await attempt(t, frozen, 600);
    await t.db.query(`UPDATE wallets SET status = 'frozen' WHERE id = $1`, [frozen.wallet.id]);
    assert.equal((await deliverWebhook(t, successEvent(id, 600))).json().outcome, 'credited');
    assert.equal(await balanceOf(t, frozen), 600);
    const res = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(frozen, newKey()), payload: { amount: 100 } });
    assert.equal(res.statusCode, 423);
    assert.equal(res.json().code, 'wallet_frozen');
  });
});

describe('the sandbox gateway over real HTTP', () => {
  let t: TestApp;
  let base: string;
  before(async () => {
    t = await startApp();
    base = await t.app.listen({ host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('serves a checkout page and delivers a signed webhook that credits the wallet', async () => {
    const user = await registerUser(t, { name: 'Sandbox User' });
    const created = await fetch(`${base}/wallet/add-money`, {
      method: 'POST',
      headers: { ...auth(user, newKey()), 'content-type': 'application/json' },
      body: JSON.stringify({ amount: 12_345 }),
    });
    assert.equal(created.status, 201);
    const { payment_id } = (await created.json()) as { payment_id: string };
    const page = await fetch(`${base}/sandbox/checkout/${payment_id}`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /INR 123\.45/);
    const done = await fetch(`${base}/sandbox/payments/${payment_id}/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'succeeded' }),
    });
    assert.equal(done.status, 200);
    const delivery = (await done.json()) as { webhook_status: number; webhook_response: { outcome: string } };
    assert.equal(delivery.webhook_status, 200);
    assert.equal(delivery.webhook_response.outcome, 'credited');
    assert.equal(await balanceOf(t, user), 12_345);
    // The gateway completing twice (a duplicate webhook) changes nothing.
    const twice = await fetch(`${base}/sandbox/payments/${payment_id}/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'succeeded' }),
    });
    assert.equal(((await twice.json()) as { webhook_response: { outcome: string } }).webhook_response.outcome, 'already_processed');
    assert.equal(await balanceOf(t, user), 12_345);
  });

  it('can decline, and can report a wrong amount (flagged, not credited)', async () => {
    const user = await registerUser(t, { name: 'Sandbox Decline' });
    const one = await attempt(t, user, 500);
    const declined = await fetch(`${base}/sandbox/payments/${one}/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'failed' }),
    });
    assert.equal(((await declined.json()) as { webhook_response: { outcome: string } }).webhook_response.outcome, 'marked_failed');
    const two = await attempt(t, user, 500);
    const wrong = await fetch(`${base}/sandbox/payments/${two}/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'succeeded', amount: 50 }),
    });
    const body = (await wrong.json()) as { webhook_status: number };
    assert.equal(body.webhook_status, 422);
    assert.equal(await balanceOf(t, user), 0);
  });

  it('answers 404 for an unknown payment and 400 for a bad outcome', async () => {
    const unknown = await fetch(`${base}/sandbox/payments/00000000-0000-4000-8000-000000000000/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'succeeded' }),
    });
    assert.equal(unknown.status, 404);
    const bad = await fetch(`${base}/sandbox/payments/00000000-0000-4000-8000-000000000000/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'maybe' }),
    });
    assert.equal(bad.status, 400);
  });
});

describe('with the sandbox switched off', () => {
  it('serves no sandbox routes', async () => {
    const t = await startApp({ GATEWAY_SANDBOX: 'false' });
    try {
      const res = await t.app.inject({ method: 'POST', url: '/sandbox/payments/x/complete', payload: { outcome: 'succeeded' } });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().code, 'not_found');
      const page = await t.app.inject({ method: 'GET', url: '/sandbox/checkout/x' });
      assert.equal(page.statusCode, 404);
    } finally {
      await t.close();
    }
  });
});
