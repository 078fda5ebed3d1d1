import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SECRETS, assertInvariants, auth, balanceOf, fund, login, registerUser, startApp, transfer, uniqueEmail, type TestApp, type User } from './helpers.js';

const run = promisify(execFile);

function cli(t: TestApp, args: string[]) {
  const env = { ...process.env, ...SECRETS, NODE_ENV: 'test', DATABASE_URL: t.config.databaseUrl! };
  return run(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('admin and CLI', () => {
  let t: TestApp;
  let admin: { token: string };
  let customer: User;
  let other: User;

  before(async () => {
    t = await startApp();
    const email = uniqueEmail('admin');
    const created = await cli(t, ['create-admin', '--email', email, '--password', 'admin password 1']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /"created":"admin"/);
    admin = { token: (await login(t, email, 'admin password 1')).access_token };
    customer = await registerUser(t, { name: 'Cust' });
    other = await registerUser(t, { name: 'Other' });
    await fund(t, customer, 5_000);
  });
  after(async () => t.close());

  it('create-admin refuses a missing or short password and a taken email', async () => {
    assert.equal((await cli(t, ['create-admin', '--email', uniqueEmail()])).code, 2);
    assert.equal((await cli(t, ['create-admin', '--email', uniqueEmail(), '--password', 'short'])).code, 2);
    const email = uniqueEmail();
    assert.equal((await cli(t, ['create-admin', '--email', email, '--password', 'long enough'])).code, 0);
    const again = await cli(t, ['create-admin', '--email', email, '--password', 'long enough']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /email_taken/);
  });

  it('an admin has no wallet', async () => {
    const me = await t.app.inject({ method: 'GET', url: '/me', headers: auth(admin) });
    assert.equal(me.json().user.role, 'admin');
    assert.equal(me.json().wallet, null);
    const wallet = await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(admin) });
    assert.equal(wallet.statusCode, 403);
  });

  it('GET /admin/reconciliation reports a sound ledger', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/admin/reconciliation', headers: auth(admin) });
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.equal(body.ok, true);
    assert.equal(body.total_balance, 0);
    assert.deepEqual(body.mismatches, []);
    assert.ok(body.checked_accounts >= 7);
  });

  it('admin routes refuse customers (403) and anonymous callers (401)', async () => {
    for (const [method, url] of [
      ['GET', '/admin/reconciliation'],
      ['POST', `/admin/wallets/${other.wallet.id}/freeze`],
      ['POST', `/admin/wallets/${other.wallet.id}/unfreeze`],
    ] as const) {
      const asCustomer = await t.app.inject({ method, url, headers: auth(customer) });
      assert.equal(asCustomer.statusCode, 403);
      assert.equal(asCustomer.json().code, 'forbidden');
      const anonymous = await t.app.inject({ method, url });
      assert.equal(anonymous.statusCode, 401);
    }
    assert.equal((await balanceOf(t, other)), 0);
    const status = await t.db.query(`SELECT status FROM wallets WHERE id = $1`, [other.wallet.id]);
    assert.equal(status.rows[0].status, 'active');
  });

  it('freeze stops money both ways; unfreeze restores it; both are in the audit log', async () => {
    const frozen = await t.app.inject({
      method: 'POST',
      url: `/admin/wallets/${other.wallet.id}/freeze`,
      headers: auth(admin),
      payload: { reason: 'suspicious activity' },
    });
    assert.equal(frozen.statusCode, 200);
    assert.deepEqual(frozen.json(), { id: other.wallet.id, handle: other.wallet.handle, status: 'frozen' });
    const into = await transfer(t, customer, other.wallet.handle, 100);
    assert.equal(into.statusCode, 423);
    assert.equal(into.json().code, 'wallet_frozen');
    const wallet = await t.app.inject({ method: 'GET', url: '/wallet', headers: auth(other) });
    assert.equal(wallet.json().status, 'frozen');
    const thawed = await t.app.inject({ method: 'POST', url: `/admin/wallets/${other.wallet.id}/unfreeze`, headers: auth(admin) });
    assert.equal(thawed.statusCode, 200);
    assert.equal(thawed.json().status, 'active');
    assert.equal((await transfer(t, customer, other.wallet.handle, 100)).statusCode, 201);
    const log = await t.db.query(`SELECT action, detail FROM audit_log WHERE subject = $1 ORDER BY id`, [`wallet:${other.wallet.id}`]);
    assert.deepEqual(
      log.rows.map((r) => r.action),
      ['wallet.freeze', 'wallet.unfreeze'],
    );
    assert.equal(log.rows[0].detail.reason, 'suspicious activity');
    await assert.rejects(t.db.query(`DELETE FROM audit_log`), /append-only/);
  });

  it('freeze of an unknown wallet is 404 wallet_not_found; a bad body is 400', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid']) {
      const res = await t.app.inject({ method: 'POST', url: `/admin/wallets/${id}/freeze`, headers: auth(admin) });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().code, 'wallet_not_found');
    }
    const bad = await t.app.inject({ method: 'POST', url: `/admin/wallets/${other.wallet.id}/freeze`, headers: auth(admin), payload: { why: 'x' } });
    assert.equal(bad.statusCode, 400);
  });

  it('the reconcile command exits 0 on a sound ledger and 1 on a mismatch', async () => {
    await assertInvariants(t.db);
    const ok = await cli(t, ['reconcile']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /"ok": true/);
    assert.match(ok.stderr, /reconcile: accounts \d+\/\d+ \(100%\)/, 'progress on stderr');
    assert.match(ok.stderr, /reconcile: transactions \d+\/\d+ \(100%\)/);
    // Corrupt a cached balance behind the ledger's back: reconciliation must notice.
    const account = await t.db.query(`SELECT account_id FROM wallets WHERE id = $1`, [customer.wallet.id]);
    await t.db.query(`UPDATE accounts SET balance = balance + 1 WHERE id = $1`, [account.rows[0].account_id]);
    try {
      const bad = await cli(t, ['reconcile']);
      assert.equal(bad.code, 1);
      assert.match(bad.stdout, /balance_differs_from_entries/);
      assert.match(bad.stdout, /total_balance_not_zero/);
      const api = await t.app.inject({ method: 'GET', url: '/admin/reconciliation', headers: auth(admin) });
      assert.equal(api.json().ok, false);
      assert.ok(api.json().mismatches.length >= 2);
      // The watching check publishes what it found and says so loudly in the log.
      const scheduled = await t.ctx.watch.check();
      assert.equal(scheduled.violations, api.json().violations);
      const metrics = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
      assert.match(metrics, new RegExp(`^ledger_invariant_violations ${scheduled.violations}$`, 'm'));
      const lastRun = Number(/^ledger_reconciliation_last_run_timestamp_seconds (\S+)$/m.exec(metrics)?.[1]);
      assert.ok(Math.abs(lastRun - Date.now() / 1000) < 60, `last run ${lastRun}`);
      assert.ok(t.logs.some((l) => l.includes('LEDGER INVARIANT VIOLATION') && l.includes('"level":50')), 'logged at error level');
    } finally {
      await t.db.query(`UPDATE accounts SET balance = balance - 1 WHERE id = $1`, [account.rows[0].account_id]);
    }
    await t.ctx.watch.check();
    assert.match((await t.app.inject({ method: 'GET', url: '/metrics' })).body, /^ledger_invariant_violations 0$/m, 'back to 0 once repaired');
  });

  it('the watching check runs on its own schedule', async () => {
    const before = Number(/^ledger_reconciliation_last_run_timestamp_seconds (\S+)$/m.exec((await t.app.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0);
    t.ctx.watch.start(1);
    try {
      const deadline = Date.now() + 10_000;
      let after = before;
      while (after <= before && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        after = Number(/^ledger_reconciliation_last_run_timestamp_seconds (\S+)$/m.exec((await t.app.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0);
      }
      assert.ok(after > before, 'a scheduled run happened');
    } finally {
      await t.ctx.watch.stop();
    }
  });

  it('unknown CLI commands exit 2 with usage', async () => {
    const res = await cli(t, ['frobnicate']);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /usage/);
  });
});
