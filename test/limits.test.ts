import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedisServer } from './redis-server.js';
import { assertInvariants, auth, balanceOf, deliverWebhook, fund, newKey, registerUser, snapshot, startApp, successEvent, transfer, type TestApp } from './helpers.js';

const REDIS = process.env.TEST_REDIS_URL;
const needsRedis = REDIS ? {} : { skip: 'redis-server is not installed (CI installs it)' };

function assertLimited(res: { statusCode: number; headers: Record<string, unknown>; json: () => { code: string; retry_after: number } }) {
  assert.equal(res.statusCode, 429);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  assert.equal(res.json().code, 'rate_limited');
  const retryAfter = Number(res.headers['retry-after']);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 3600, `Retry-After ${String(res.headers['retry-after'])}`);
  assert.equal(res.json().retry_after, retryAfter);
}

function login(t: TestApp, email: string, password: string, ip = '127.0.0.1') {
  return t.app.inject({ method: 'POST', url: '/auth/login', payload: { email, password }, remoteAddress: ip });
}

async function metric(t: TestApp, name: string): Promise<number> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : NaN;
}

describe('abuse limits (in process)', () => {
  const apps: TestApp[] = [];
  after(async () => Promise.all(apps.map((a) => a.close())));
  const start = async (env: Record<string, string>) => {
    const t = await startApp({ RATE_LIMITS_ENABLED: 'true', ...env });
    apps.push(t);
    return t;
  };

  it('login: per account across addresses, per address across accounts; 429 with Retry-After', async () => {
    const t = await start({ RATE_LIMIT_LOGIN_PER_ACCOUNT: '3/60', RATE_LIMIT_LOGIN_PER_IP: '5/60' });
    const victim = await registerUser(t, { name: 'Victim' });
    // Guessing one account's password from many addresses stops at the per-account limit.
    for (let i = 0; i < 2; i++) assert.equal((await login(t, victim.email, 'wrong-password', `10.0.0.${i}`)).statusCode, 401);
    assertLimited(await login(t, victim.email.toUpperCase(), 'wrong-password', '10.0.0.9'));
    // Even the right password waits: the limit counts attempts, not failures.
    assertLimited(await login(t, victim.email, victim.password, '10.0.0.10'));
    // Another account from another address is not affected.
    const other = await registerUser(t, { name: 'Other' });
    assert.equal((await login(t, other.email, other.password, '10.0.1.1')).statusCode, 200);
    // One address trying many accounts stops at the per-address limit.
    for (let i = 0; i < 5; i++) await login(t, `nobody${i}@example.com`, 'wrong-password', '10.0.2.1');
    assertLimited(await login(t, other.email, other.password, '10.0.2.1'));
    assert.ok((await metric(t, 'http_rate_limited_total{limit="login:ip"}')) >= 1);
  });

  it('PIN-authorized requests: per user; a refused transfer moves nothing and others go on', async () => {
    const t = await start({ RATE_LIMIT_PIN_PER_USER: '3/60' });
    const a = await registerUser(t, { name: 'Limited A' });
    const b = await registerUser(t, { name: 'Limited B' });
    await fund(t, a, 10_000);
    await fund(t, b, 10_000);
    for (let i = 0; i < 3; i++) assert.equal((await transfer(t, a, b.wallet.handle, 100)).statusCode, 201);
    const before = await snapshot(t.db);
    const key = newKey();
    assertLimited(await transfer(t, a, b.wallet.handle, 100, key));
    assertLimited(await t.app.inject({ method: 'POST', url: '/wallet/pay', headers: auth(a, newKey()), payload: { merchant: b.wallet.handle, amount: 1, pin: a.pin } }));
    assert.deepEqual(await snapshot(t.db), before, 'a refused request changes nothing');
    assert.equal(await balanceOf(t, a), 9_700);
    assert.equal((await transfer(t, b, a.wallet.handle, 100)).statusCode, 201, 'another user is not limited');
    // Reads are not PIN-authorized and are never limited.
    assert.equal((await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(a) })).statusCode, 200);
  });

  it('registration per client address, honouring X-Forwarded-For only behind a trusted proxy', async () => {
    const register = (t: TestApp, forwardedFor: string) =>
      t.app.inject({
        method: 'POST',
        url: '/auth/register',
        headers: { 'x-forwarded-for': forwardedFor },
        payload: { email: `r${newKey().slice(0, 12)}@example.com`, password: 'long enough pw', pin: '1234' },
      });
    const direct = await start({ RATE_LIMIT_REGISTER_PER_IP: '2/3600' });
    assert.equal((await register(direct, '1.1.1.1')).statusCode, 201);
    assert.equal((await register(direct, '2.2.2.2')).statusCode, 201);
    // Without a trusted proxy the header is the client's word and is ignored.
    assertLimited(await register(direct, '3.3.3.3'));

    const proxied = await start({ RATE_LIMIT_REGISTER_PER_IP: '2/3600', TRUST_PROXY_HOPS: '1' });
    for (const ip of ['1.1.1.1', '1.1.1.1']) assert.equal((await register(proxied, ip)).statusCode, 201);
    assertLimited(await register(proxied, '1.1.1.1'));
    assert.equal((await register(proxied, '2.2.2.2')).statusCode, 201);
  });

  it('webhooks per address, counted before the signature is checked', async () => {
    const t = await start({ RATE_LIMIT_WEBHOOK_PER_IP: '3/60' });
    const user = await registerUser(t);
    for (let i = 0; i < 3; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/webhooks/gateway', payload: { junk: true }, headers: { 'gateway-signature': 'forged' } });
      assert.equal(res.statusCode, 400);
    }
    const payment = await t.app.inject({ method: 'POST', url: '/wallet/add-money', headers: auth(user, newKey()), payload: { amount: 500 } });
    assertLimited(await deliverWebhook(t, successEvent(payment.json().payment_id, 500)));
    assert.equal(await balanceOf(t, user), 0);
  });
});

describe('abuse limits shared through Redis', needsRedis, () => {
  const apps: TestApp[] = [];
  after(async () => Promise.all(apps.map((a) => a.close())));

  it('two instances share one count, and the shared store shows as up', async () => {
    const env = { RATE_LIMITS_ENABLED: 'true', REDIS_URL: REDIS!, RATE_LIMIT_LOGIN_PER_ACCOUNT: '4/60' };
    const one = await startApp(env);
    apps.push(one);
    // Each instance has its own database here; the count is per account email, kept in Redis.
    const two = await startApp(env);
    apps.push(two);
    const user = await registerUser(one, { name: 'Shared' });
    await waitFor(async () => (await metric(one, 'rate_limit_redis_up')) === 1 && (await metric(two, 'rate_limit_redis_up')) === 1);
    // registerUser logged in once on `one`; three more attempts spread over both instances.
    assert.equal((await login(two, user.email, 'wrong-password')).statusCode, 401);
    assert.equal((await login(one, user.email, 'wrong-password')).statusCode, 401);
    assert.equal((await login(two, user.email, 'wrong-password')).statusCode, 401);
    assertLimited(await login(one, user.email, user.password));
    assertLimited(await login(two, user.email, user.password));
  });

  it('Redis going away neither stops the service nor moves money twice', async () => {
    const server = await startRedisServer();
    try {
      const t = await startApp({ RATE_LIMITS_ENABLED: 'true', REDIS_URL: server.url, RATE_LIMIT_PIN_PER_USER: '100/60' });
      apps.push(t);
      const a = await registerUser(t, { name: 'Redis A' });
      const b = await registerUser(t, { name: 'Redis B' });
      await fund(t, a, 10_000);
      await waitFor(async () => (await metric(t, 'rate_limit_redis_up')) === 1);
      assert.equal((await transfer(t, a, b.wallet.handle, 100)).statusCode, 201);

      server.kill();
      await waitFor(async () => (await metric(t, 'rate_limit_redis_up')) === 0);
      // Limits now count in this process; money still moves exactly once per key.
      const key = newKey();
      const answers = await Promise.all(Array.from({ length: 5 }, () => transfer(t, a, b.wallet.handle, 250, key)));
      assert.ok(answers.every((r) => r.statusCode === 201 || r.statusCode === 409), answers.map((r) => r.statusCode).join(','));
      assert.equal((await transfer(t, a, b.wallet.handle, 250, key)).statusCode, 201);
      assert.equal(await balanceOf(t, a), 10_000 - 100 - 250);
      await assertInvariants(t.db);
      assert.equal((await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
    } finally {
      server.kill();
    }
  });

  it('a Redis that never answers is given up on at once', async () => {
    // Nothing listens here: the limiter counts in memory from the first request.
    const t = await startApp({ RATE_LIMITS_ENABLED: 'true', REDIS_URL: 'redis://127.0.0.1:1', RATE_LIMIT_LOGIN_PER_ACCOUNT: '2/60' });
    apps.push(t);
    const user = await registerUser(t, { name: 'No Redis' });
    assert.equal((await login(t, user.email, 'wrong-password')).statusCode, 401);
    assertLimited(await login(t, user.email, user.password));
    assert.equal(await metric(t, 'rate_limit_redis_up'), 0);
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not met in time');
}
