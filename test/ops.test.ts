import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERRORS } from '../src/errors.js';
import { auth, fund, newKey, registerUser, startApp, transfer, type TestApp } from './helpers.js';

describe('operations', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp({ LOG_LEVEL: 'debug' });
  });
  after(async () => t.close());

  it('GET /healthz and /readyz answer 200', async () => {
    assert.deepEqual((await t.app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
    assert.deepEqual((await t.app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready' });
  });

  it('every response carries a request id, echoing a sane incoming one', async () => {
    const mine = await t.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'abc-123' } });
    assert.equal(mine.headers['x-request-id'], 'abc-123');
    const hostile = await t.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'a b\nc' } });
    assert.match(String(hostile.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  it('GET /metrics exposes HTTP and ledger counters in Prometheus text format', async () => {
    const a = await registerUser(t, { name: 'Metric A' });
    const b = await registerUser(t, { name: 'Metric B' });
    await fund(t, a, 1_000);
    await transfer(t, a, b.wallet.handle, 100);
    await transfer(t, a, b.wallet.handle, 100_000);
    const res = await t.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    assert.match(res.body, /http_requests_total\{method="POST",route="\/wallet\/transfer",status="201"\} 1/);
    assert.match(res.body, /ledger_commands_total\{type="transfer",outcome="posted"\} 1/);
    assert.match(res.body, /ledger_commands_total\{type="transfer",outcome="insufficient_funds"\} 1/);
    assert.match(res.body, /ledger_moved_minor_units_total\{type="transfer"\} 100/);
    assert.match(res.body, /ledger_batch_size_bucket/);
    assert.match(res.body, /http_request_duration_seconds_bucket/);
  });

  it('answers 503 service_unavailable while the database is unreachable', async () => {
    const { createPool } = await import('../src/db/pool.js');
    const dead = createPool('postgres://nobody:nothing@127.0.0.1:1/none', 1);
    const original = t.ctx.db.query;
    t.ctx.db.query = dead.query.bind(dead) as typeof original;
    try {
      const res = await t.app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(res.statusCode, 503);
      assert.equal(res.json().code, 'service_unavailable');
    } finally {
      t.ctx.db.query = original;
      await dead.end();
    }
    assert.equal((await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  });

  it('a connection the database drops while checked out does not crash the process (found by the chaos suite)', async () => {
    // As during a PostgreSQL restart: the server ends a backend whose client is checked out
    // but between queries (a withdrawal holds one while it calls the bank).
    const client = await t.db.connect();
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    await t.db.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(client.query('SELECT 1'));
    client.release(true);
    assert.equal((await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  });

  it('unknown routes answer 404 problem+json', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/nope' });
    assert.equal(res.statusCode, 404);
    assert.match(String(res.headers['content-type']), /application\/problem\+json/);
    assert.equal(res.json().code, 'not_found');
  });

  it('refuses non-JSON, broken JSON, empty and oversized bodies with clear 4xx', async () => {
    const form = await t.app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'text/plain' }, payload: 'hi' });
    assert.equal(form.statusCode, 415);
    assert.equal(form.json().code, 'unsupported_media_type');
    const broken = await t.app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: '{"email":' });
    assert.equal(broken.statusCode, 400);
    assert.equal(broken.json().code, 'validation_failed');
    const empty = await t.app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: '' });
    assert.equal(empty.statusCode, 400);
    const big = await t.app.inject({
      method: 'POST',
      url: '/auth/login',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ email: 'a@b.co', password: 'x'.repeat(100_000) }),
    });
    assert.equal(big.statusCode, 413);
    assert.equal(big.json().code, 'payload_too_large');
    const proto = await t.app.inject({
      method: 'POST',
      url: '/auth/login',
      headers: { 'content-type': 'application/json' },
      payload: '{"email":"a@b.co","password":"longenough","__proto__":{"admin":true}}',
    });
    assert.equal(proto.statusCode, 400);
  });

  it('answers 500 with no internals when something unexpected breaks', async () => {
    const original = t.ctx.wallets.view.bind(t.ctx.wallets);
    t.ctx.wallets.view = async () => {
      throw new Error('secret internal detail: SELECT * FROM users');
    };
    try {
      const user = await registerUser(t, { name: 'Broken' });
      const res = await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(user) });
      assert.equal(res.statusCode, 500);
      assert.equal(res.json().code, 'internal_error');
      assert.ok(!res.body.includes('secret internal detail'));
      assert.ok(!res.body.includes('SELECT'));
    } finally {
      t.ctx.wallets.view = original;
    }
  });

  it('/openapi.json is OpenAPI 3.1 and documents every route, body and error code', async () => {
    const spec = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    assert.equal(spec.openapi, '3.1.0');
    const expected: Array<[string, string]> = [
      ['post', '/auth/register'],
      ['post', '/auth/login'],
      ['post', '/auth/refresh'],
      ['post', '/auth/logout'],
      ['get', '/me'],
      ['get', '/wallet'],
      ['get', '/wallet/balance'],
      ['post', '/wallet/add-money'],
      ['post', '/wallet/transfer'],
      ['get', '/wallet/transactions'],
      ['get', '/transactions'],
      ['get', '/transactions/{id}'],
      ['get', '/wallet/payments/{payment_id}'],
      ['post', '/webhooks/gateway'],
      ['get', '/sandbox/checkout/{payment_id}'],
      ['post', '/sandbox/payments/{payment_id}/complete'],
      ['get', '/healthz'],
      ['get', '/readyz'],
      ['get', '/metrics'],
      ['get', '/admin/reconciliation'],
      ['post', '/admin/wallets/{id}/freeze'],
      ['post', '/admin/wallets/{id}/unfreeze'],
      ['post', '/wallet/pay'],
      ['post', '/merchant/payments/{transaction_id}/refund'],
      ['post', '/wallet/bank-accounts'],
      ['get', '/wallet/bank-accounts'],
      ['post', '/wallet/withdraw'],
      ['get', '/wallet/withdrawals/{id}'],
      ['post', '/webhooks/bank'],
      ['post', '/sandbox/payouts/{withdrawal_id}/complete'],
      ['post', '/sandbox/bank/payouts'],
      ['get', '/sandbox/bank/payouts/{reference}'],
      ['post', '/sandbox/bank/payouts/{reference}/cancel'],
      ['get', '/sandbox/gateway/payments/{payment_id}'],
      ['post', '/admin/cashback-campaigns'],
      ['get', '/admin/cashback-campaigns'],
      ['get', '/admin/cashback-campaigns/{id}'],
      ['post', '/admin/cashback-pool/fund'],
      ['post', '/admin/adjustments'],
    ];
    for (const [method, path] of expected) assert.ok(spec.paths[path]?.[method], `${method.toUpperCase()} ${path} is documented`);
    const transferOp = spec.paths['/wallet/transfer'].post;
    assert.ok(transferOp.requestBody.content['application/json'].schema.properties.amount);
    assert.deepEqual(transferOp.security, [{ bearerAuth: [] }]);
    // Errors are documented with the media type they are sent with, and limited routes document 429.
    assert.ok(transferOp.responses['422'].content['application/problem+json'].schema);
    assert.ok(transferOp.responses['429'], 'a PIN-authorized route documents 429');
    assert.ok(spec.paths['/auth/login'].post.responses['429'], 'login documents 429');
    assert.equal(spec.paths['/wallet'].get.responses['429'], undefined, 'unlimited routes do not');
    assert.ok(transferOp.parameters.some((p: { in: string; name: string; required: boolean }) => p.in === 'header' && p.name === 'idempotency-key' && p.required));
    const text = JSON.stringify(spec);
    for (const code of Object.keys(ERRORS)) {
      // The answers for unknown routes and unknown methods, which have no operation to document them.
      if (code === 'not_found' || code === 'method_not_allowed') continue;
      assert.ok(text.includes(code), `error code ${code} appears in the spec`);
    }
    for (const [path, item] of Object.entries(spec.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)) {
      for (const [method, operation] of Object.entries(item)) {
        assert.ok(operation.responses['500'], `${method} ${path} documents 500`);
      }
    }
  });

  it('GET /docs serves the interactive reference', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/docs/' });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /swagger/i);
  });

  it('docs/errors.md documents exactly the codes of the catalog', () => {
    const doc = readFileSync('docs/errors.md', 'utf8');
    const documented = [...doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    const catalog = Object.entries(ERRORS).map(([code, e]) => [code, e.status]);
    assert.deepEqual(documented.sort(), catalog.sort());
  });

  it('logs carry request ids and never a password, PIN, token, secret or bank account number', async () => {
    const secretPassword = 'unique-password-Zx9Q';
    const secretPin = '864213';
    const email = `logscan.${Date.now()}@example.com`;
    await t.app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: secretPassword, pin: secretPin, name: 'Log Scan' } });
    const tokens = (await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: secretPassword } })).json();
    await t.app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'wrong-password-Qq7' } });
    await t.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: tokens.refresh_token } });
    await t.app.inject({
      method: 'POST',
      url: '/wallet/transfer',
      headers: { authorization: `Bearer ${tokens.access_token}`, 'idempotency-key': newKey() },
      payload: { to: 'x@wallet', amount: 1, pin: secretPin },
    });
    const logs = t.logs.join('');
    assert.ok(logs.length > 0);
    assert.match(logs, /"reqId"/);
    await t.app.inject({
      method: 'POST',
      url: '/wallet/bank-accounts',
      headers: { authorization: `Bearer ${tokens.access_token}` },
      payload: { account_number: '987654321098765', ifsc: 'ICIC0009876', holder_name: 'Log Scan' },
    });
    for (const secret of [secretPassword, secretPin, 'wrong-password-Qq7', tokens.access_token, tokens.refresh_token, t.config.jwtSecret, t.config.pinPepper, '987654321098765']) {
      assert.ok(!logs.includes(secret), `logs contain a secret (${secret.slice(0, 6)}…)`);
    }
  });
});
