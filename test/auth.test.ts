import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import { SECRETS, auth, login, registerUser, snapshot, startApp, uniqueEmail, type TestApp } from './helpers.js';

describe('auth', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp();
  });
  after(async () => t.close());

  const register = (payload: Record<string, unknown>) => t.app.inject({ method: 'POST', url: '/auth/register', payload });

  it('registers a customer with one wallet, balance 0, and a name@wallet handle', async () => {
    const email = uniqueEmail('priya');
    const res = await register({ email, password: 'long enough pw', pin: '1234', name: 'Priya Sharma', phone: '+919876543210' });
    assert.equal(res.statusCode, 201);
    const body = res.json();
    assert.deepEqual(Object.keys(body.user).sort(), ['email', 'id', 'name', 'role']);
    assert.equal(body.user.email, email);
    assert.equal(body.user.role, 'customer');
    assert.equal(body.wallet.balance, 0);
    assert.equal(body.wallet.currency, 'INR');
    assert.match(body.wallet.handle, /^priya\.sharma(\.\d+)?@wallet$/);
    const wallets = await t.db.query(`SELECT count(*)::int AS n FROM wallets WHERE user_id = $1`, [body.user.id]);
    assert.equal(wallets.rows[0].n, 1);
  });

  it('gives a second user with the same name a different handle', async () => {
    const a = await register({ email: uniqueEmail(), password: 'long enough pw', pin: '1234', name: 'Same Name' });
    const b = await register({ email: uniqueEmail(), password: 'long enough pw', pin: '1234', name: 'Same Name' });
    assert.notEqual(a.json().wallet.handle, b.json().wallet.handle);
  });

  it('registers a merchant with a business name', async () => {
    const res = await register({ email: uniqueEmail(), password: 'long enough pw', pin: '1234', role: 'merchant', business_name: 'Chai Point' });
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().user.role, 'merchant');
    assert.match(res.json().wallet.handle, /^chai\.point/);
  });

  it('refuses a second registration of an email in any case: 409 email_taken', async () => {
    const email = uniqueEmail('dup');
    assert.equal((await register({ email, password: 'long enough pw', pin: '1234' })).statusCode, 201);
    const before = await snapshot(t.db);
    const again = await register({ email: email.toUpperCase(), password: 'another pw 123', pin: '4321' });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().code, 'email_taken');
    assert.deepEqual(await snapshot(t.db), before);
  });

  const invalid: Array<[string, Record<string, unknown>]> = [
    ['a short password', { password: 'short' }],
    ['a 129-character password', { password: 'p'.repeat(129) }],
    ['a 3-digit PIN', { pin: '123' }],
    ['a 7-digit PIN', { pin: '1234567' }],
    ['a numeric PIN', { pin: 1234 }],
    ['a bad email', { email: 'not-an-email' }],
    ['an unknown field', { nickname: 'x' }],
    ['the admin role', { role: 'admin' }],
    ['a merchant without a business name', { role: 'merchant' }],
    ['a business name for a customer', { business_name: 'Shop' }],
    ['a bad phone', { phone: 'call me' }],
  ];
  for (const [what, change] of invalid) {
    it(`refuses registration with ${what}: 400 validation_failed, nothing created`, async () => {
      const before = await snapshot(t.db);
      const users = await t.db.query(`SELECT count(*)::int AS n FROM users`);
      const res = await register({ email: uniqueEmail(), password: 'long enough pw', pin: '1234', ...change });
      assert.equal(res.statusCode, 400, res.body);
      assert.equal(res.json().code, 'validation_failed');
      assert.deepEqual(await snapshot(t.db), before);
      assert.equal((await t.db.query(`SELECT count(*)::int AS n FROM users`)).rows[0].n, users.rows[0].n);
    });
  }

  it('stores neither the password nor the PIN in plain text', async () => {
    const user = await registerUser(t, { pin: '975310' });
    const { rows } = await t.db.query(`SELECT password_hash, pin_hash, pin_salt FROM users WHERE id = $1`, [user.id]);
    assert.match(rows[0].password_hash, /^\$argon2id\$/);
    assert.ok(!rows[0].password_hash.includes(user.password));
    assert.equal(rows[0].pin_hash.length, 32);
    assert.ok(!rows[0].pin_hash.toString('latin1').includes('975310'));
    assert.ok(!rows[0].pin_hash.toString('hex').includes('975310'));
  });

  it('logs in with the email in any case; wrong email and wrong password get the same 401', async () => {
    const user = await registerUser(t);
    const res = await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email.toUpperCase(), password: user.password } });
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 900);
    assert.ok(body.access_token && body.refresh_token);
    const wrongPassword = await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: 'wrong password' } });
    const wrongEmail = await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email: uniqueEmail(), password: user.password } });
    for (const r of [wrongPassword, wrongEmail]) {
      assert.equal(r.statusCode, 401);
      assert.equal(r.json().code, 'invalid_credentials');
    }
    assert.equal(wrongPassword.json().detail, wrongEmail.json().detail);
  });

  it('GET /me returns the user and wallet', async () => {
    const user = await registerUser(t, { name: 'Me Myself' });
    const res = await t.app.inject({ method: 'GET', url: '/me', headers: auth(user) });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().user.id, user.id);
    assert.equal(res.json().user.name, 'Me Myself');
    assert.equal(res.json().wallet.id, user.wallet.id);
    assert.equal(res.json().wallet.balance, 0);
  });

  it('rotates refresh tokens: the new one works, the old one stops working', async () => {
    const user = await registerUser(t);
    const first = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refreshToken } });
    assert.equal(first.statusCode, 200);
    const pair = first.json();
    assert.notEqual(pair.refresh_token, user.refreshToken);
    assert.equal((await t.app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${pair.access_token}` } })).statusCode, 200);
    const second = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: pair.refresh_token } });
    assert.equal(second.statusCode, 200);
  });

  it('reusing a spent refresh token revokes the whole login (token family)', async () => {
    const user = await registerUser(t);
    const rotated = (await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refreshToken } })).json();
    const reuse = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refreshToken } });
    assert.equal(reuse.statusCode, 401);
    assert.equal(reuse.json().code, 'invalid_refresh_token');
    // The legitimately rotated token and its access token are dead too.
    const next = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: rotated.refresh_token } });
    assert.equal(next.statusCode, 401);
    const me = await t.app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${rotated.access_token}` } });
    assert.equal(me.statusCode, 401);
    // Another login of the same user is not affected.
    const other = await login(t, user.email, user.password);
    assert.equal((await t.app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${other.access_token}` } })).statusCode, 200);
  });

  it('refuses an unknown refresh token', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: 'made-up' } });
    assert.equal(res.statusCode, 401);
    assert.equal(res.json().code, 'invalid_refresh_token');
  });

  it('refuses an expired refresh token', async () => {
    const user = await registerUser(t);
    await t.db.query(`UPDATE refresh_tokens SET expires_at = now() - interval '1 second'`);
    const res = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refreshToken } });
    assert.equal(res.statusCode, 401);
  });

  it('logout answers 204 and ends the login: access and refresh tokens stop working', async () => {
    const user = await registerUser(t);
    const out = await t.app.inject({ method: 'POST', url: '/auth/logout', headers: auth(user) });
    assert.equal(out.statusCode, 204);
    assert.equal(out.body, '');
    const me = await t.app.inject({ method: 'GET', url: '/me', headers: auth(user) });
    assert.equal(me.statusCode, 401);
    assert.equal(me.json().code, 'invalid_token');
    const refresh = await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refreshToken } });
    assert.equal(refresh.statusCode, 401);
  });

  it('refuses missing, malformed, tampered, expired, alg:none and foreign-key tokens', async () => {
    const user = await registerUser(t);
    const [header, payload] = user.token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
    const elevated = Buffer.from(JSON.stringify({ ...claims, role: 'admin' })).toString('base64url');
    const tampered = `${header}.${elevated}.${user.token.split('.')[2]}`;
    const sign = (secret: string, exp: number) =>
      new SignJWT({ sid: claims.sid, role: claims.role })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(claims.sub)
        .setIssuer('wallet-service')
        .setAudience('wallet-api')
        .setIssuedAt(exp - 900)
        .setExpirationTime(exp)
        .sign(new TextEncoder().encode(secret));
    const now = Math.floor(Date.now() / 1000);
    const foreign = await sign('some-other-secret-that-is-long-enough!!', now + 600);
    const expired = await sign(SECRETS.JWT_SECRET, now - 10);
    const cases: Array<[Record<string, string>, string]> = [
      [{}, 'authentication_required'],
      [{ authorization: 'Basic abc' }, 'invalid_token'],
      [{ authorization: 'Bearer' }, 'invalid_token'],
      [{ authorization: 'Bearer not.a.jwt' }, 'invalid_token'],
      [{ authorization: `Bearer ${none}` }, 'invalid_token'],
      [{ authorization: `Bearer ${tampered}` }, 'invalid_token'],
      [{ authorization: `Bearer ${foreign}` }, 'invalid_token'],
      [{ authorization: `Bearer ${expired}` }, 'invalid_token'],
    ];
    for (const [headers, code] of cases) {
      const res = await t.app.inject({ method: 'GET', url: '/me', headers });
      assert.equal(res.statusCode, 401, JSON.stringify(headers));
      assert.equal(res.json().code, code);
    }
    // The same signing path with the right key and a live session works.
    const good = await sign(SECRETS.JWT_SECRET, now + 600);
    assert.equal((await t.app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${good}` } })).statusCode, 200);
  });

  it('refuses login bodies with unknown fields or wrong types', async () => {
    for (const payload of [{ email: 'a@b.co' }, { email: 'a@b.co', password: 12345678 }, { email: 'a@b.co', password: 'x', extra: 1 }]) {
      const res = await t.app.inject({ method: 'POST', url: '/auth/login', payload });
      assert.equal(res.statusCode, 400);
      assert.equal(res.json().code, 'validation_failed');
    }
  });
});
