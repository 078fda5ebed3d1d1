import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readHistory } from '../src/ledger/history.js';
import { createPool } from '../src/db/pool.js';
import { seedHistory, seedWallets } from '../bench/seed.js';
import { SECRETS, assertInvariants, auth, bareAccounts, bulkDeposits, fund, registerUser, startApp, transfer, type TestApp, type User } from './helpers.js';

describe('history', () => {
  let t: TestApp;
  let a: User;
  let b: User;
  let outsider: User;
  const get = (user: User, url: string) => t.app.inject({ method: 'GET', url, headers: auth(user) });

  before(async () => {
    t = await startApp();
    a = await registerUser(t, { name: 'Hist A' });
    b = await registerUser(t, { name: 'Hist B' });
    outsider = await registerUser(t, { name: 'Outsider' });
    await fund(t, a, 10_000);
    for (let i = 1; i <= 25; i++) {
      const res = await transfer(t, a, b.wallet.handle, i, undefined, { note: `n${i}` });
      assert.equal(res.statusCode, 201);
    }
    assert.equal((await transfer(t, b, a.wallet.handle, 300)).statusCode, 201);
  });
  after(async () => t.close());

  it('pages newest first with a cursor until has_more is false, with no gaps or repeats', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await get(a, `/wallet/transactions?limit=10${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.statusCode, 200, res.body);
      const page = res.json();
      seen.push(...page.data.map((i: { id: string }) => i.id));
      cursor = page.next_cursor;
      assert.equal(page.has_more, cursor !== null);
      pages++;
    } while (cursor);
    assert.equal(pages, 3);
    assert.equal(seen.length, 27); // 1 deposit, 25 transfers out, 1 transfer in
    assert.equal(new Set(seen).size, 27);
    const first = (await get(a, '/wallet/transactions?limit=1')).json().data[0];
    assert.equal(first.direction, 'credit');
    assert.equal(first.amount, 300);
    assert.deepEqual(first.counterparty, { handle: b.wallet.handle, name: 'Hist B' });
  });

  it('shows balance_after for every item, consistent with the amounts', async () => {
    const items = (await get(a, '/wallet/transactions?limit=100')).json().data as Array<{ amount: number; direction: string; balance_after: number }>;
    for (let i = 0; i < items.length - 1; i++) {
      const newer = items[i]!;
      const older = items[i + 1]!;
      assert.equal(newer.balance_after, older.balance_after + (newer.direction === 'credit' ? newer.amount : -newer.amount));
    }
  });

  it('GET /transactions is the same history', async () => {
    const one = (await get(a, '/wallet/transactions?limit=5')).json();
    const two = (await get(a, '/transactions?limit=5')).json();
    assert.deepEqual(one, two);
  });

  it('filters by type, direction and time', async () => {
    const deposits = (await get(a, '/wallet/transactions?type=deposit')).json();
    assert.equal(deposits.data.length, 1);
    assert.equal(deposits.data[0].type, 'deposit');
    assert.equal(deposits.data[0].counterparty, null);
    const credits = (await get(a, '/wallet/transactions?direction=credit&limit=100')).json();
    assert.equal(credits.data.length, 2);
    const debits = (await get(a, '/wallet/transactions?direction=debit&type=transfer&limit=100')).json();
    assert.equal(debits.data.length, 25);
    const future = new Date(Date.now() + 60_000).toISOString();
    const none = (await get(a, `/wallet/transactions?from=${encodeURIComponent(future)}`)).json();
    assert.equal(none.data.length, 0);
    const all = (await get(a, `/wallet/transactions?to=${encodeURIComponent(future)}&limit=100`)).json();
    assert.equal(all.data.length, 27);
  });

  it('refuses bad query parameters with 400', async () => {
    for (const query of ['limit=0', 'limit=101', 'limit=abc', 'type=gift', 'direction=up', 'from=yesterday', 'page=2']) {
      const res = await get(a, `/wallet/transactions?${query}`);
      assert.equal(res.statusCode, 400, query);
      assert.equal(res.json().code, 'validation_failed', query);
    }
    for (const cursor of ['bogus', Buffer.from('e:-1').toString('base64url'), Buffer.from('x:12').toString('base64url')]) {
      const res = await get(a, `/wallet/transactions?cursor=${cursor}`);
      assert.equal(res.statusCode, 400, cursor);
      assert.equal(res.json().code, 'invalid_cursor', cursor);
    }
  });

  it('GET /transactions/{id} shows each party its own side, and no one else anything', async () => {
    const sent = (await get(a, '/wallet/transactions?type=transfer&direction=debit&limit=1')).json().data[0];
    const mine = await get(a, `/transactions/${sent.id}`);
    assert.equal(mine.statusCode, 200);
    assert.deepEqual(mine.json(), sent);
    const theirs = await get(b, `/transactions/${sent.id}`);
    assert.equal(theirs.statusCode, 200);
    assert.equal(theirs.json().direction, 'credit');
    assert.deepEqual(theirs.json().counterparty, { handle: a.wallet.handle, name: 'Hist A' });
    for (const id of [sent.id, '00000000-0000-4000-8000-000000000000', 'nope']) {
      const res = await get(outsider, `/transactions/${id}`);
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().code, 'transaction_not_found');
    }
  });

  it('a page of a long history runs on a cached generic plan, not planned again each time', async () => {
    // A bare account with 30,000 deposits: enough history that a plan costed for "LIMIT $n" (a
    // tenth of it) would lose to planning each page afresh.
    const owner = (await bareAccounts(t.db, 1))[0]!;
    await bulkDeposits(t.db, owner, 30_000);
    await t.db.query('ANALYZE entries');
    const client = await t.db.connect();
    try {
      // PostgreSQL plans the first five runs of a prepared statement for their values, then
      // keeps its generic plan if that costs no more: every later page skips the planner.
      const newest = await readHistory(client, owner, {}, 20);
      assert.equal(newest.items.length, 20);
      assert.equal(newest.items[0]!.balance_after, 30000);
      for (let i = 0; i < 8; i++) {
        await readHistory(client, owner, {}, 20);
        const older = await readHistory(client, owner, { beforeEntryId: newest.entryIds[i]! }, 20);
        assert.equal(older.items[0]!.balance_after, 29999 - i);
      }
      const { rows } = await client.query<{ name: string; generic_plans: number; custom_plans: number }>(
        `SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE name IN ('history-000000-21', 'history-100000-21') ORDER BY name`,
      );
      assert.equal(rows.length, 2);
      for (const r of rows) {
        assert.ok(r.generic_plans >= 3, `${r.name}: ${r.generic_plans} generic, ${r.custom_plans} custom plans`);
      }
    } finally {
      client.release();
    }
    await assertInvariants(t.db);
  });

  it('an empty wallet has an empty first page', async () => {
    const page = (await get(outsider, '/wallet/transactions')).json();
    assert.deepEqual(page, { data: [], has_more: false, next_cursor: null });
  });

  it('GET /wallet and /wallet/balance agree with the history', async () => {
    const wallet = (await get(a, '/wallet')).json();
    const balance = (await get(a, '/wallet/balance')).json();
    const latest = (await get(a, '/wallet/transactions?limit=1')).json().data[0];
    assert.equal(wallet.balance, latest.balance_after);
    assert.equal(wallet.available_balance, wallet.balance);
    assert.equal(wallet.held_balance, 0);
    assert.equal(wallet.status, 'active');
    assert.deepEqual(balance, {
      wallet_id: wallet.id,
      handle: wallet.handle,
      currency: 'INR',
      balance: wallet.balance,
      available_balance: wallet.available_balance,
      held_balance: 0,
    });
  });
});

describe('history on a young, skewed ledger', () => {
  let t: TestApp;

  before(async () => {
    t = await startApp();
  });
  after(async () => t.close());

  it('a page costs the same however many entries the account has, whatever the statistics guess', async () => {
    // A young ledger: many accounts with an entry or two, and one (a merchant, say) with most of
    // them. Not knowing the account when it plans, PostgreSQL guesses each holds a few entries,
    // and may fetch all of this one's, sort them and keep a page. It must not also look up the
    // counterparty of every one of them before keeping the page: that made a page of a
    // 2,000-entry account cost 60-110 ms of database time in the bench.
    const keys = { jwtSecret: SECRETS.JWT_SECRET, pinPepper: SECRETS.PIN_PEPPER };
    await seedWallets(t.db, 200, 1_000, keys);
    const last = (await t.db.query<{ id: number }>(`SELECT max(id) AS id FROM accounts`)).rows[0]!.id;
    // The history goes to the first of the two wallets seedHistory creates (after its merchant).
    await seedHistory(t.db, 2_000, keys);
    const owner = (await t.db.query<{ id: number }>(`SELECT id FROM accounts WHERE id > $1 ORDER BY id OFFSET 1 LIMIT 1`, [last])).rows[0]!.id;
    await t.db.query('VACUUM (ANALYZE)');
    // Index scans of the counterparty look-up (entries by transaction), counted by PostgreSQL
    // around three pages read on a connection of its own (flushed before it answers the last query).
    const lookups = async () =>
      (await t.db.query<{ n: number }>(`SELECT idx_scan::bigint AS n FROM pg_stat_user_indexes WHERE indexrelname = 'entries_by_transaction'`)).rows[0]!.n;
    const own = createPool(t.config.databaseUrl!, 1);
    try {
      const before = await lookups();
      const first = await readHistory(own, owner, {}, 20);
      const second = await readHistory(own, owner, { beforeEntryId: first.entryIds.at(-1)! }, 20);
      await readHistory(own, owner, { beforeEntryId: second.entryIds.at(-1)! }, 20);
      await own.query('SELECT pg_stat_force_next_flush()');
      assert.deepEqual(
        [...first.items, ...second.items].map((i) => i.balance_after),
        Array.from({ length: 40 }, (_, i) => 4_000 - i),
      );
      const used = (await lookups()) - before;
      // At most one look-up per row of each page (21: the page and one more, to know there is more).
      assert.ok(used <= 3 * 21, `three pages looked up ${used} counterparties`);
    } finally {
      await own.end();
    }
    await assertInvariants(t.db);
  });
});
