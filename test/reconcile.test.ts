import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { reconcile } from '../src/ledger/reconcile.js';
import { createPool } from '../src/db/pool.js';
import { assertInvariants, bareAccounts, bulkDeposits, fund, registerUser, startApp, transfer, type TestApp } from './helpers.js';

describe('reconciliation', () => {
  let t: TestApp;

  before(async () => {
    t = await startApp();
  });
  after(async () => t.close());

  it('reads each entry a bounded number of times, however skewed the ledger', async () => {
    // A real ledger is skewed: a few accounts (a merchant, the gateway's clearing account)
    // hold most entries, and many hold few or none. The statistics then make PostgreSQL guess
    // that every account has tens of thousands of entries spread through the table, and a
    // "latest entry of this account" look-up walked the primary key backwards from the newest
    // entry: past every newer entry of everyone else, and through the whole table for an
    // account with no entries at all. On the bench's ledger of two million entries, that
    // made one chunk of the account check outlast the statement timeout.
    const a = await registerUser(t, { name: 'Old A' });
    const b = await registerUser(t, { name: 'Old B' });
    await registerUser(t, { name: 'Never funded' });
    await fund(t, a, 5_000);
    assert.equal((await transfer(t, a, b.wallet.handle, 1_000)).statusCode, 201);
    const [busy] = await bareAccounts(t.db, 1);
    await bulkDeposits(t.db, busy!, 60_000);
    await t.db.query('ANALYZE entries');

    // Index entries read on the entries table, counted by PostgreSQL, around one reconciliation
    // on a connection of its own (its statistics are flushed before it answers the last query).
    const own = createPool(t.config.databaseUrl!, 1);
    try {
      // Each query here is its own transaction, so it sees the statistics as they are now.
      const indexReads = async () => {
        const { rows } = await t.db.query<{ n: number }>(`SELECT sum(idx_tup_read)::bigint AS n FROM pg_stat_user_indexes WHERE relname = 'entries'`);
        return rows[0]!.n;
      };
      const entries = (await t.db.query<{ n: number }>('SELECT count(*)::bigint AS n FROM entries')).rows[0]!.n;
      const before = await indexReads();
      const result = await reconcile(own);
      await own.query('SELECT pg_stat_force_next_flush()');
      const read = (await indexReads()) - before;
      assert.equal(result.ok, true, JSON.stringify(result.mismatches));
      // Once per account for its sum and latest balance, once per transaction for its legs.
      assert.ok(read <= 2 * entries, `reconciliation read ${read} index entries of a table of ${entries}`);
    } finally {
      await own.end();
    }
    await assertInvariants(t.db);
  });
});
