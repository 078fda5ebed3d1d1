import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertInvariants,
  auth,
  balanceOf,
  fund,
  newKey,
  registerUser,
  snapshot,
  startApp,
  transfer,
  type TestApp,
  type User,
} from './helpers.js';

describe('POST /wallet/transfer', () => {
  let t: TestApp;
  let asha: User;
  let bala: User;

  before(async () => {
    t = await startApp();
    asha = await registerUser(t, { name: 'Asha' });
    bala = await registerUser(t, { name: 'Bala' });
    await fund(t, asha, 100_000);
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('moves money by handle, returns the sender-side history item and balance', async () => {
    const res = await transfer(t, asha, bala.wallet.handle, 2_500, newKey(), { note: 'lunch' });
    assert.equal(res.statusCode, 201, res.body);
    const body = res.json();
    assert.equal(body.balance, 97_500);
    assert.equal(body.transaction.type, 'transfer');
    assert.equal(body.transaction.direction, 'debit');
    assert.equal(body.transaction.amount, 2_500);
    assert.equal(body.transaction.balance_after, 97_500);
    assert.equal(body.transaction.status, 'posted');
    assert.equal(body.transaction.note, 'lunch');
    assert.deepEqual(body.transaction.counterparty, { handle: bala.wallet.handle, name: 'Bala' });
    assert.equal(await balanceOf(t, bala), 2_500);
  });

  it('accepts a wallet id and a handle in any case', async () => {
    assert.equal((await transfer(t, asha, bala.wallet.id, 100)).statusCode, 201);
    assert.equal((await transfer(t, asha, bala.wallet.handle.toUpperCase(), 100)).statusCode, 201);
  });

  it('replays a retry with the same key and body: same status, same body, money moved once', async () => {
    const key = newKey();
    const first = await transfer(t, asha, bala.wallet.handle, 700, key);
    const before = await snapshot(t.db);
    const again = await transfer(t, asha, bala.wallet.handle, 700, key);
    assert.equal(again.statusCode, 201);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(first.headers['idempotent-replayed'], undefined);
    assert.deepEqual(again.json(), first.json());
    assert.deepEqual(await snapshot(t.db), before);
  });

  it('replays even when the PIN sent with the retry is wrong: the first answer stands', async () => {
    const key = newKey();
    const first = await transfer(t, asha, bala.wallet.handle, 50, key);
    const again = await transfer(t, asha, bala.wallet.handle, 50, key, { pin: '0000' });
    assert.equal(again.statusCode, 201);
    assert.deepEqual(again.json(), first.json());
  });

  it('refuses the same key with a different body: 422 idempotency_key_reused, nothing moves', async () => {
    const key = newKey();
    await transfer(t, asha, bala.wallet.handle, 300, key);
    const before = await snapshot(t.db);
    const res = await transfer(t, asha, bala.wallet.handle, 301, key);
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().code, 'idempotency_key_reused');
    assert.deepEqual(await snapshot(t.db), before);
  });

  it('scopes keys to the caller: two users may use the same key', async () => {
    await fund(t, bala, 1_000);
    const key = newKey();
    assert.equal((await transfer(t, asha, bala.wallet.handle, 10, key)).statusCode, 201);
    const res = await transfer(t, bala, asha.wallet.handle, 10, key);
    assert.equal(res.statusCode, 201);
    assert.equal(res.headers['idempotent-replayed'], undefined);
  });

  const refusals: Array<[string, () => Promise<{ statusCode: number; json: () => { code: string } }>, number, string]> = [
    ['no Idempotency-Key', () => transfer(t, asha, bala.wallet.handle, 100, null), 400, 'idempotency_key_required'],
    ['an empty Idempotency-Key', () => transfer(t, asha, bala.wallet.handle, 100, ''), 400, 'invalid_idempotency_key'],
    ['an Idempotency-Key over 255 characters', () => transfer(t, asha, bala.wallet.handle, 100, 'k'.repeat(256)), 400, 'invalid_idempotency_key'],
    ['a string amount', () => transfer(t, asha, bala.wallet.handle, '100'), 400, 'validation_failed'],
    ['a zero amount', () => transfer(t, asha, bala.wallet.handle, 0), 400, 'validation_failed'],
    ['a negative amount', () => transfer(t, asha, bala.wallet.handle, -100), 400, 'validation_failed'],
    ['a fractional amount', () => transfer(t, asha, bala.wallet.handle, 10.5), 400, 'validation_failed'],
    ['a huge amount', () => transfer(t, asha, bala.wallet.handle, 1e300), 400, 'validation_failed'],
    ['an amount over the per-transaction maximum', () => transfer(t, asha, bala.wallet.handle, 10_000_001), 422, 'limit_exceeded'],
    ['an unknown field', () => transfer(t, asha, bala.wallet.handle, 100, newKey(), { ammount: 100 }), 400, 'validation_failed'],
    ['a null amount', () => transfer(t, asha, bala.wallet.handle, null), 400, 'validation_failed'],
    ['a PIN that is not 4-6 digits', () => transfer(t, asha, bala.wallet.handle, 100, newKey(), { pin: '12ab' }), 400, 'validation_failed'],
    ['a note over 280 characters', () => transfer(t, asha, bala.wallet.handle, 100, newKey(), { note: 'x'.repeat(281) }), 400, 'validation_failed'],
    ['an unknown handle', () => transfer(t, asha, 'nobody@wallet', 100), 404, 'wallet_not_found'],
    ['an unknown wallet id', () => transfer(t, asha, '00000000-0000-4000-8000-000000000000', 100), 404, 'wallet_not_found'],
    ['the own wallet', () => transfer(t, asha, asha.wallet.handle, 100), 422, 'same_wallet'],
    ['more than the balance', () => transfer(t, asha, bala.wallet.handle, 9_000_000), 422, 'insufficient_funds'],
    ['no token', () => t.app.inject({ method: 'POST', url: '/wallet/transfer', payload: {} }), 401, 'authentication_required'],
  ];
  for (const [what, send, status, code] of refusals) {
    it(`refuses ${what}: ${status} ${code}, nothing changes`, async () => {
      const before = await snapshot(t.db);
      const res = await send();
      assert.equal(res.statusCode, status);
      assert.equal(res.json().code, code);
      assert.deepEqual(await snapshot(t.db), {
        ...before,
        // A business refusal is an answer like any other: it is kept under its key.
        keys: code === 'insufficient_funds' ? before.keys + 1 : before.keys,
      });
    });
  }

  it('answers problem+json for refusals', async () => {
    const res = await transfer(t, asha, asha.wallet.handle, 100);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    const body = res.json();
    assert.deepEqual(Object.keys(body).sort(), ['code', 'detail', 'status', 'title', 'type']);
    assert.equal(body.status, 422);
  });

  it('keeps an insufficient_funds answer under its key: the retry gets the same 422', async () => {
    const key = newKey();
    const first = await transfer(t, bala, asha.wallet.handle, 5_000_000, key);
    assert.equal(first.json().code, 'insufficient_funds');
    const again = await transfer(t, bala, asha.wallet.handle, 5_000_000, key);
    assert.equal(again.statusCode, 422);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.json(), first.json());
  });

  it('refuses a wrong PIN with 403 invalid_pin and locks after 5 in a row with 423 pin_locked', async () => {
    const carol = await registerUser(t, { name: 'Carol', pin: '1357' });
    await fund(t, carol, 1_000);
    const before = await snapshot(t.db);
    for (let i = 1; i <= 5; i++) {
      const res = await transfer(t, carol, bala.wallet.handle, 100, newKey(), { pin: '9999' });
      assert.equal(res.statusCode, 403, `attempt ${i}`);
      assert.equal(res.json().code, 'invalid_pin');
    }
    const locked = await transfer(t, carol, bala.wallet.handle, 100, newKey());
    assert.equal(locked.statusCode, 423);
    assert.equal(locked.json().code, 'pin_locked');
    assert.deepEqual(await snapshot(t.db), before);
    // After the lock expires the right PIN works again and resets the count.
    await t.db.query(`UPDATE accounts SET pin_locked_until = now() - interval '1 second' WHERE id = (SELECT account_id FROM wallets WHERE user_id = $1)`, [carol.id]);
    assert.equal((await transfer(t, carol, bala.wallet.handle, 100)).statusCode, 201);
    const { rows } = await t.db.query(`SELECT pin_failures, pin_locked_until FROM accounts WHERE id = (SELECT account_id FROM wallets WHERE user_id = $1)`, [carol.id]);
    assert.deepEqual(rows[0], { pin_failures: 0, pin_locked_until: null });
  });

  it('a right PIN resets the count of wrong ones', async () => {
    const dev = await registerUser(t, { name: 'Dev', pin: '4321' });
    await fund(t, dev, 1_000);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 4; i++) await transfer(t, dev, bala.wallet.handle, 1, newKey(), { pin: '0000' });
      assert.equal((await transfer(t, dev, bala.wallet.handle, 1)).statusCode, 201);
    }
  });

  it('stops a concurrent PIN brute force at the lockout', async () => {
    const eve = await registerUser(t, { name: 'Eve', pin: '777777' });
    await fund(t, eve, 1_000);
    const guesses = Array.from({ length: 40 }, (_, i) => String(100000 + i));
    guesses[39] = '777777';
    const answers = await Promise.all(guesses.map((pin) => transfer(t, eve, bala.wallet.handle, 10, newKey(), { pin })));
    const codes = answers.map((a) => (a.statusCode === 201 ? 'ok' : a.json().code));
    assert.ok(codes.filter((c) => c === 'invalid_pin').length <= 5, codes.join(','));
    assert.ok(codes.filter((c) => c === 'pin_locked').length >= 34, codes.join(','));
  });

  it('refuses transfers from and to a frozen wallet with 423 wallet_frozen', async () => {
    const frank = await registerUser(t, { name: 'Frank' });
    await fund(t, frank, 1_000);
    await t.db.query(`UPDATE wallets SET status = 'frozen' WHERE id = $1`, [frank.wallet.id]);
    const before = await snapshot(t.db);
    const out = await transfer(t, frank, bala.wallet.handle, 100);
    assert.equal(out.statusCode, 423);
    assert.equal(out.json().code, 'wallet_frozen');
    const into = await transfer(t, asha, frank.wallet.handle, 100);
    assert.equal(into.statusCode, 423);
    assert.equal(into.json().code, 'wallet_frozen');
    const after = await snapshot(t.db);
    assert.equal(after.entries, before.entries);
    assert.equal(after.balances, before.balances);
    await t.db.query(`UPDATE wallets SET status = 'active' WHERE id = $1`, [frank.wallet.id]);
  });

  it('answers 409 idempotency_key_in_use to a duplicate that arrives while the first runs', async () => {
    const key = newKey();
    const before = await balanceOf(t, asha);
    // Hold the first request inside its batch: another transaction keeps the sender's row locked.
    const blocker = await t.db.connect();
    let first: Promise<Awaited<ReturnType<typeof transfer>>>;
    try {
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM accounts WHERE id = (SELECT account_id FROM wallets WHERE id = $1) FOR UPDATE`, [asha.wallet.id]);
      first = transfer(t, asha, bala.wallet.handle, 5, key);
      // Wait until the first request's batch is waiting for the lock, so it is surely in flight.
      for (let i = 0; i < 200; i++) {
        const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`);
        if (rows[0]!.n > 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      const duplicate = await transfer(t, asha, bala.wallet.handle, 5, key);
      assert.equal(duplicate.statusCode, 409);
      assert.equal(duplicate.json().code, 'idempotency_key_in_use');
    } finally {
      await blocker.query('COMMIT');
      blocker.release();
    }
    assert.equal((await first).statusCode, 201);
    assert.equal(await balanceOf(t, asha), before - 5);
  });

  it('refuses a transfer between wallets of different currencies with 422 currency_mismatch', async () => {
    const usd = await registerUser(t, { name: 'Dollar' });
    // Wallets take the configured currency; make one in another currency behind the API's back.
    await t.db.query(`UPDATE accounts SET currency = 'USD' WHERE id = (SELECT account_id FROM wallets WHERE id = $1)`, [usd.wallet.id]);
    await t.db.query(`UPDATE wallets SET currency = 'USD' WHERE id = $1`, [usd.wallet.id]);
    const before = await snapshot(t.db);
    const res = await transfer(t, asha, usd.wallet.handle, 100);
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().code, 'currency_mismatch');
    const after = await snapshot(t.db);
    assert.equal(after.entries, before.entries);
    assert.equal(after.balances, before.balances);
  });

  it('refuses an admin (no wallet) with 403 forbidden', async () => {
    // Promote a fresh user in the database: admins are created from the CLI only.
    const admin = await registerUser(t, { name: 'Root' });
    await t.db.query(`UPDATE users SET role = 'admin' WHERE id = $1`, [admin.id]);
    await t.db.query(`DELETE FROM wallets WHERE user_id = $1`, [admin.id]);
    const res = await t.app.inject({ method: 'POST', url: '/wallet/transfer', headers: auth(admin, newKey()), payload: { to: bala.wallet.handle, amount: 1, pin: admin.pin } });
    assert.equal(res.statusCode, 403);
    assert.equal(res.json().code, 'forbidden');
  });
});
