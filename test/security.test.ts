import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addBank, auth, createAdmin, createCampaign, fund, fundPool, newKey, pay, registerUser, snapshot, startApp, transfer, withdraw, type TestApp, type User } from './helpers.js';

type Spec = { paths: Record<string, Record<string, { security?: unknown[] }>> };

const SECURITY_HEADERS = ['x-content-type-options', 'x-frame-options', 'content-security-policy', 'referrer-policy', 'strict-transport-security', 'cache-control'];

function assertSecurityHeaders(res: { headers: Record<string, unknown>; statusCode: number }, what: string) {
  for (const h of SECURITY_HEADERS) assert.ok(res.headers[h], `${what} (${res.statusCode}) carries ${h}`);
  assert.equal(res.headers['x-content-type-options'], 'nosniff');
  assert.equal(res.headers['x-frame-options'], 'DENY');
}

describe('security', () => {
  let t: TestApp;
  let spec: Spec;
  let alice: User;
  let bob: User;
  let shop: User;
  let otherShop: User;
  let admin: { id: string; token: string };
  const ids: Record<string, string> = {};

  before(async () => {
    t = await startApp({ LOG_LEVEL: 'debug', SANDBOX_BANK_MODE: 'manual' });
    spec = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    alice = await registerUser(t, { name: 'Alice' });
    bob = await registerUser(t, { name: 'Bob' });
    shop = await registerUser(t, { name: 'Shop', role: 'merchant', businessName: 'Shop' });
    otherShop = await registerUser(t, { name: 'Other Shop', role: 'merchant', businessName: 'Other Shop' });
    admin = await createAdmin(t);
    ids.payment = await fund(t, alice, 100_000);
    ids.transaction = (await transfer(t, alice, bob.wallet.handle, 1_000)).json().transaction.id;
    ids.merchantPayment = (await pay(t, alice, shop.wallet.handle, 5_000)).json().transaction.id;
    ids.bankAccount = await addBank(t, alice, '123456789012');
    const withdrawal = await withdraw(t, alice, 2_000, ids.bankAccount);
    assert.equal(withdrawal.statusCode, 202, withdrawal.body);
    ids.withdrawal = withdrawal.json().withdrawal_id;
    await fundPool(t, admin, 10_000);
    ids.campaign = (await createCampaign(t, admin, { name: 'Sec', budget: 1_000 })).id;
  });
  after(async () => t.close());

  /**
   * Every operation that names a resource in its path, with what Bob (or another merchant)
   * gets when he names Alice's (or the first merchant's) resource. The test fails when the API
   * grows a route with an id that is not listed here.
   */
  const crossUser: Record<string, { as: () => User; url: () => string; method: 'GET' | 'POST'; payload?: () => unknown; status: number; code: string }> = {
    'GET /transactions/{id}': { as: () => bob, method: 'GET', url: () => `/transactions/${ids.merchantPayment}`, status: 404, code: 'transaction_not_found' },
    'GET /wallet/payments/{payment_id}': { as: () => bob, method: 'GET', url: () => `/wallet/payments/${ids.payment}`, status: 404, code: 'payment_not_found' },
    'GET /wallet/withdrawals/{id}': { as: () => bob, method: 'GET', url: () => `/wallet/withdrawals/${ids.withdrawal}`, status: 404, code: 'withdrawal_not_found' },
    'POST /merchant/payments/{transaction_id}/refund': {
      as: () => otherShop,
      method: 'POST',
      url: () => `/merchant/payments/${ids.merchantPayment}/refund`,
      payload: () => ({ amount: 100 }),
      status: 404,
      code: 'payment_not_found',
    },
  };

  it('no cross-user reads or writes through any route that takes an id', async () => {
    const withIds = Object.entries(spec.paths).flatMap(([path, item]) =>
      Object.keys(item).filter(() => path.includes('{')).map((m) => `${m.toUpperCase()} ${path}`),
    );
    // Admin routes are closed to non-admins (next test); sandbox routes are the simulated
    // gateway and bank, which exist only in sandbox mode (tested below).
    const userRoutes = withIds.filter((op) => !op.includes(' /admin/') && !op.includes(' /sandbox/'));
    assert.deepEqual(userRoutes.sort(), Object.keys(crossUser).sort(), 'every user route with an id is covered here');
    const before = await snapshot(t.db);
    for (const [op, c] of Object.entries(crossUser)) {
      const res = await t.app.inject({
        method: c.method,
        url: c.url(),
        headers: auth(c.as(), c.method === 'POST' ? newKey() : undefined),
        ...(c.payload ? { payload: c.payload() as object } : {}),
      });
      assert.equal(res.statusCode, c.status, `${op}: ${res.body}`);
      assert.equal(res.json().code, c.code, op);
      assert.ok(!res.body.includes(alice.wallet.handle), `${op} leaks nothing about the owner`);
    }
    // Someone else's bank account cannot be withdrawn to.
    const foreign = await withdraw(t, bob, 1, ids.bankAccount!);
    assert.equal(foreign.statusCode, 404, foreign.body);
    assert.equal(foreign.json().code, 'bank_account_not_found');
    const bobsAccounts = await t.app.inject({ method: 'GET', url: '/wallet/bank-accounts', headers: auth(bob) });
    assert.deepEqual(bobsAccounts.json().data, []);
    // A customer cannot refund at all, not even a payment made to someone else.
    const customerRefund = await t.app.inject({ method: 'POST', url: `/merchant/payments/${ids.merchantPayment}/refund`, headers: auth(alice, newKey()), payload: { amount: 1 } });
    assert.equal(customerRefund.statusCode, 403);
    assert.deepEqual(await snapshot(t.db), before, 'nothing changed');
    // The owner sees each of them.
    for (const url of [`/transactions/${ids.transaction}`, `/wallet/payments/${ids.payment}`, `/wallet/withdrawals/${ids.withdrawal}`]) {
      assert.equal((await t.app.inject({ method: 'GET', url, headers: auth(alice) })).statusCode, 200, url);
    }
  });

  it('every admin route refuses customers and merchants (403) and anonymous callers (401), changing nothing', async () => {
    const adminOps = Object.entries(spec.paths).flatMap(([path, item]) =>
      path.startsWith('/admin/') ? Object.keys(item).map((m) => ({ method: m.toUpperCase() as 'GET' | 'POST', path })) : [],
    );
    assert.ok(adminOps.length >= 8, `found ${adminOps.length} admin operations`);
    const before = await snapshot(t.db);
    for (const { method, path } of adminOps) {
      const url = path.replace('{id}', path.includes('wallets') ? alice.wallet.id : ids.campaign!);
      const payload = method === 'POST' ? { amount: 1, reason: 'x', account: alice.wallet.id, name: 'x', percent_bps: 1, budget: 1 } : undefined;
      for (const who of [alice, shop]) {
        const res = await t.app.inject({ method, url, headers: auth(who, newKey()), ...(payload ? { payload } : {}) });
        assert.equal(res.statusCode, 403, `${method} ${path} as ${who === shop ? 'merchant' : 'customer'}: ${res.body}`);
        assert.equal(res.json().code, 'forbidden');
      }
      const anonymous = await t.app.inject({ method, url, ...(payload ? { payload } : {}) });
      assert.equal(anonymous.statusCode, 401, `${method} ${path} anonymous`);
    }
    assert.deepEqual(await snapshot(t.db), before);
  });

  it('sandbox routes do not exist when the sandbox is off', async () => {
    const prod = await startApp({ GATEWAY_SANDBOX: 'false' });
    try {
      const spec = (await prod.app.inject({ method: 'GET', url: '/openapi.json' })).json() as Spec;
      assert.deepEqual(Object.keys(spec.paths).filter((p) => p.startsWith('/sandbox/')), []);
      const res = await prod.app.inject({ method: 'POST', url: `/sandbox/payments/${ids.payment}/complete`, payload: { outcome: 'succeeded' } });
      assert.equal(res.statusCode, 404);
    } finally {
      await prod.close();
    }
  });

  it('every response carries the security headers: each operation, errors, 404, 405, 413', async () => {
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of Object.keys(item)) {
        const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
        for (const headers of [{}, auth(alice)]) {
          const res = await t.app.inject({ method: method.toUpperCase() as 'GET', url, headers });
          assertSecurityHeaders(res, `${method.toUpperCase()} ${path}`);
          assert.ok(res.statusCode < 500, `${method.toUpperCase()} ${path}: ${res.statusCode}`);
        }
      }
    }
    assertSecurityHeaders(await t.app.inject({ method: 'GET', url: '/no/such/route' }), 'unknown route');
    const wrongMethod = await t.app.inject({ method: 'DELETE', url: '/wallet' });
    assert.equal(wrongMethod.statusCode, 405);
    assert.equal(wrongMethod.json().code, 'method_not_allowed');
    assert.match(String(wrongMethod.headers.allow), /GET/);
    assertSecurityHeaders(wrongMethod, 'wrong method');
    const big = await t.app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: `{"email":"${'a'.repeat(70_000)}"}` });
    assert.equal(big.statusCode, 413);
    assertSecurityHeaders(big, 'oversized body');
    assertSecurityHeaders(await t.app.inject({ method: 'GET', url: '/docs' }), 'docs');
    // The only HTML page (the sandbox checkout) runs its script by nonce, nothing inline else.
    const checkout = await t.app.inject({ method: 'GET', url: `/sandbox/checkout/${ids.payment}` });
    const nonce = /script-src 'nonce-([^']+)'/.exec(String(checkout.headers['content-security-policy']))?.[1];
    assert.ok(nonce && checkout.body.includes(`<script nonce="${nonce}">`));
  });

  it('NUL characters and over-long path parameters are refused as 400, never 500', async () => {
    const nul = await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'a\u0000@example.com', password: 'x' } });
    assert.equal(nul.statusCode, 400);
    assert.equal(nul.json().code, 'validation_failed');
    const long = await t.app.inject({ method: 'GET', url: `/transactions/${'9'.repeat(3000)}`, headers: auth(alice) });
    assert.equal(long.statusCode, 400);
    assert.match(String(long.headers['content-type']), /problem\+json/);
  });

  it('an admin token does not open wallet routes to the admin', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/wallet/transfer', headers: auth(admin, newKey()), payload: { to: bob.wallet.handle, amount: 1, pin: '1234' } });
    assert.equal(res.statusCode, 403);
  });

  it('logs written during all of this hold no password, PIN, token or full bank account number', () => {
    const text = t.logs.join('');
    assert.ok(text.length > 0);
    for (const secret of [alice.password, alice.token, alice.refreshToken, bob.token, admin.token, '123456789012']) {
      assert.ok(!text.includes(secret), `logs contain ${secret.slice(0, 6)}…`);
    }
    assert.ok(!/"pin":"\d{4,6}"/.test(text), 'logs contain a PIN');
  });
});
