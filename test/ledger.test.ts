import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
const TEST_ENGINE = { timeZone: 'UTC', pin: { pepper: 'unused-in-these-tests', maxFailures: 5, lockSeconds: 900 } };
import { randomUUID } from 'node:crypto';
import { applyBatch, LedgerEngine } from '../src/ledger/engine.js';
import { READ } from '../src/ledger/batch-read.js';
import { WRITE } from '../src/ledger/batch-write.js';
import { withTransaction } from '../src/db/transaction.js';
import { createPool, type Db, type Queryable } from '../src/db/pool.js';
import type { PostingCommand, PostingResult } from '../src/ledger/types.js';
import { assertInvariants, bareAccounts, clearingAccount, registerUser, startApp, fund, type TestApp } from './helpers.js';

describe('the ledger schema refuses what would break the books', () => {
  let t: TestApp;
  let customer: number;
  let other: number;
  let clearing: number;

  before(async () => {
    t = await startApp();
    const a = await registerUser(t, { name: 'Ledger A' });
    const b = await registerUser(t, { name: 'Ledger B' });
    await fund(t, a, 1_000);
    const ids = await t.db.query<{ account_id: number }>(`SELECT account_id FROM wallets WHERE id = ANY($1::uuid[]) ORDER BY handle`, [[a.wallet.id, b.wallet.id]]);
    [customer, other] = ids.rows.map((r) => r.account_id) as [number, number];
    clearing = await clearingAccount(t.db);
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('refuses UPDATE, DELETE and TRUNCATE of entries', async () => {
    await assert.rejects(t.db.query(`UPDATE entries SET amount = amount + 1`), /immutable/);
    await assert.rejects(t.db.query(`DELETE FROM entries`), /immutable/);
    await assert.rejects(t.db.query(`TRUNCATE entries CASCADE`), /immutable/);
  });

  it('refuses a ledger transaction whose entries do not sum to zero', async () => {
    const id = randomUUID();
    await assert.rejects(
      withTransaction(t.db, async (tx) => {
        await tx.query(`INSERT INTO ledger_transactions (id, type) VALUES ($1, 'adjustment')`, [id]);
        await tx.query(
          `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, 100, 0, 'adjustment'), ($1, $3, -99, 0, 'adjustment')`,
          [id, customer, clearing],
        );
      }),
      /does not balance/,
    );
    const { rowCount } = await t.db.query(`SELECT 1 FROM ledger_transactions WHERE id = $1`, [id]);
    assert.equal(rowCount, 0);
  });

  it('refuses legs of one transaction split across statements, even if they would balance', async () => {
    const id = randomUUID();
    await assert.rejects(
      withTransaction(t.db, async (tx) => {
        await tx.query(`INSERT INTO ledger_transactions (id, type) VALUES ($1, 'adjustment')`, [id]);
        await tx.query(`INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, 100, 0, 'adjustment')`, [id, customer]);
        await tx.query(`INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, -100, 0, 'adjustment')`, [id, clearing]);
      }),
      /does not balance/,
    );
  });

  it('refuses entries whose ledger transaction or account does not exist', async () => {
    const ghost = randomUUID();
    await assert.rejects(
      t.db.query(
        `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, 5, 0, 'adjustment'), ($1, $3, -5, 0, 'adjustment')`,
        [ghost, customer, clearing],
      ),
      /does not exist/,
    );
    const id = randomUUID();
    await assert.rejects(
      withTransaction(t.db, async (tx) => {
        await tx.query(`INSERT INTO ledger_transactions (id, type) VALUES ($1, 'adjustment')`, [id]);
        await tx.query(
          `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, 5, 0, 'adjustment'), ($1, 987654321, -5, 0, 'adjustment')`,
          [id, customer],
        );
      }),
      /account 987654321, which does not exist/,
    );
  });

  it('ledger transactions and accounts are permanent', async () => {
    await assert.rejects(t.db.query(`UPDATE ledger_transactions SET note = 'rewritten'`), /permanent/);
    await assert.rejects(t.db.query(`DELETE FROM ledger_transactions`), /permanent/);
    await assert.rejects(t.db.query(`DELETE FROM accounts WHERE id = $1`, [other]), /permanent/);
    await assert.rejects(t.db.query(`UPDATE accounts SET id = id + 1000000 WHERE id = $1`, [other]), /can only be updated to DEFAULT/);
  });

  it('refuses a one-legged ledger transaction', async () => {
    const id = randomUUID();
    await assert.rejects(
      withTransaction(t.db, async (tx) => {
        await tx.query(`INSERT INTO ledger_transactions (id, type) VALUES ($1, 'adjustment')`, [id]);
        await tx.query(`INSERT INTO entries (transaction_id, account_id, amount, balance_after, type) VALUES ($1, $2, 0, 0, 'adjustment')`, [id, customer]);
      }),
    );
  });

  it('refuses a negative customer balance (CHECK), whatever the application does', async () => {
    await assert.rejects(t.db.query(`UPDATE accounts SET balance = -1 WHERE id = $1`, [other]), /customer_(balance|available)_not_negative/);
    await assert.rejects(t.db.query(`UPDATE accounts SET held = balance + 1 WHERE id = $1`, [customer]), /customer_available_not_negative/);
  });

  it('evaluates each command of a batch on its own, in order, against running balances', async () => {
    const cmd = (from: number, to: number, amount: number): PostingCommand => ({
      type: 'transfer',
      legs: [
        { accountId: from, amount: -amount },
        { accountId: to, amount },
      ],
    });
    const results = await withTransaction(t.db, (tx) =>
      applyBatch(tx, [cmd(customer, other, 600), cmd(customer, other, 600), cmd(other, customer, 100), cmd(customer, other, 500)], TEST_ENGINE),
    );
    const outcomes = results.map((r) => (r.kind === 'applied' ? (r.outcome.ok ? 'ok' : r.outcome.code) : r.kind));
    // 1000 - 600 = 400; 600 more is refused; +100 = 500; 500 more leaves exactly 0.
    assert.deepEqual(outcomes, ['ok', 'insufficient_funds', 'ok', 'ok']);
    const balance = (await t.db.query<{ balance: number }>(`SELECT balance FROM accounts WHERE id = $1`, [customer])).rows[0]!.balance;
    assert.equal(balance, 0);
    // Put the money back for the tests below.
    await withTransaction(t.db, (tx) => applyBatch(tx, [cmd(other, customer, 1_000)], TEST_ENGINE));
  });

  it('isolates a command that breaks the whole batch: the others still post', async () => {
    const engine = new LedgerEngine(t.db, TEST_ENGINE);
    const good = (amount: number): PostingCommand => ({
      type: 'transfer',
      legs: [
        { accountId: customer, amount: -amount },
        { accountId: other, amount },
      ],
    });
    const broken: PostingCommand = { type: 'transfer', legs: [{ accountId: customer, amount: -5 }, { accountId: 987_654_321, amount: 5 }] };
    const settled = await Promise.allSettled([engine.post(good(10)), engine.post(broken), engine.post(good(20)), engine.post(good(30))]);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
    );
    for (const s of settled) if (s.status === 'fulfilled') assert.equal(s.value.kind, 'applied');
  });

  it('refuses malformed commands before touching the database', async () => {
    const engine = new LedgerEngine(t.db, TEST_ENGINE);
    const bad: PostingCommand[] = [
      { type: 'transfer', legs: [{ accountId: customer, amount: -5 }, { accountId: other, amount: 4 }] },
      { type: 'transfer', legs: [{ accountId: customer, amount: 0 }, { accountId: other, amount: 0 }] },
      { type: 'transfer', legs: [{ accountId: customer, amount: 1.5 }, { accountId: other, amount: -1.5 }] },
      { type: 'transfer', legs: [{ accountId: customer, amount: -5 }, { accountId: customer, amount: 5 }] },
      { type: 'transfer', legs: [{ accountId: customer, amount: 0 }] },
    ];
    for (const command of bad) await assert.rejects(engine.post(command), /ledger invariant violated/);
  });

  it('groups concurrent commands into shared database transactions', async () => {
    const engine = new LedgerEngine(t.db, TEST_ENGINE);
    let transactions = 0;
    const original = t.db.connect.bind(t.db);
    // Count how many connections the engine checks out: one per database transaction.
    (t.db as unknown as { connect: typeof original }).connect = (async () => {
      transactions++;
      return original();
    }) as typeof original;
    try {
      const posts = Array.from({ length: 50 }, () =>
        engine.post({ type: 'transfer', legs: [{ accountId: customer, amount: -1 }, { accountId: other, amount: 1 }] }),
      );
      const results = await Promise.all(posts);
      assert.ok(results.every((r) => r.kind === 'applied' && r.outcome.ok));
    } finally {
      (t.db as unknown as { connect: typeof original }).connect = original;
    }
    assert.ok(transactions < 50, `50 commands used ${transactions} database transactions`);
  });

  it('sends each batch in two round trips, whatever its size: BEGIN with the read, the write with COMMIT', async () => {
    const engine = new LedgerEngine(t.db, TEST_ENGINE);
    const transfer = (): PostingCommand => ({ type: 'transfer', legs: [{ accountId: customer, amount: -1 }, { accountId: other, amount: 1 }] });
    // Every connection of the pool prepares the engine's statements before it is counted.
    await Promise.all(Array.from({ length: 20 }, () => engine.post(transfer())));
    const sent: string[][] = [];
    const original = t.db.connect.bind(t.db);
    (t.db as unknown as { connect: typeof original }).connect = (async () => {
      const client = await original();
      const queries: string[] = [];
      sent.push(queries);
      // Count this checkout's queries, and put the client back as it was when it is released.
      const { query, release } = client;
      Object.assign(client, {
        query: (text: string) => (queries.push(text), (query as (text: string) => Promise<unknown>).call(client, text)),
        release: (error?: Error | boolean) => {
          Object.assign(client, { query, release });
          return release.call(client, error);
        },
      });
      return client;
    }) as typeof original;
    try {
      const results = await Promise.all(Array.from({ length: 60 }, () => engine.post(transfer())));
      assert.ok(results.every((r) => r.kind === 'applied' && r.outcome.ok));
    } finally {
      (t.db as unknown as { connect: typeof original }).connect = original;
    }
    assert.ok(sent.length >= 2 && sent.length < 60, `60 commands in ${sent.length} batches`);
    for (const queries of sent) {
      assert.equal(queries.length, 2, queries.join('\n---\n'));
      assert.match(queries[0]!, /^BEGIN;\nSET LOCAL enable_seqscan = off;\nSET LOCAL plan_cache_mode = force_generic_plan;\nEXECUTE ledger_read_v\d+\(/);
      assert.match(queries[1]!, /^EXECUTE ledger_write_v\d+\([^]*;\nCOMMIT$/);
    }
  });
});

describe('a batch finds its rows by key, never by scanning a table', () => {
  let t: TestApp;
  let clearing: number;
  let n = 0;
  before(async () => {
    t = await startApp();
    clearing = await clearingAccount(t.db);
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });
  const deposit = (accountId: number): PostingCommand => {
    const key = `scan-test-${n++}`;
    return {
      type: 'deposit',
      legs: [
        { accountId: clearing, amount: -1 },
        { accountId, amount: 1 },
      ],
      idempotency: { principal: 'test', key, requestHash: Buffer.alloc(32), render: () => ({ statusCode: 201, body: { key } }) },
    };
  };
  /** Sequential scans so far of the tables a batch reads, as counted after `db`'s own statements. */
  const seqScans = async (db: Queryable) => {
    await db.query('SELECT pg_stat_force_next_flush()');
    const { rows } = await db.query<{ relname: string; seq_scan: number }>(
      `SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname IN ('accounts', 'ledger_transactions', 'idempotency_keys', 'entries')`,
    );
    return Object.fromEntries(rows.map((r) => [r.relname, r.seq_scan]));
  };

  it('reads, writes and checks a batch without a sequential scan of accounts, ledger transactions, entries or keys', async () => {
    const accounts = await bareAccounts(t.db, 3000);
    // A ledger big enough that a whole-table scan is a real choice for the planner. (Holds
    // stay empty here, and scanning an empty table is the right plan, so they are not counted.)
    for (let i = 0; i < accounts.length; i += 500) {
      await withTransaction(t.db, (tx) => applyBatch(tx, accounts.slice(i, i + 500).map(deposit), TEST_ENGINE));
    }
    await t.db.query('ANALYZE accounts, ledger_transactions, entries, idempotency_keys');
    const client = await t.db.connect();
    try {
      const before = await seqScans(client);
      for (let round = 0; round < 3; round++) {
        await client.query('BEGIN');
        await applyBatch(client, [0, 1, 2, 3, 4, 5, 6, 7].map((i) => deposit(accounts[(round * 8 + i) * 97]!)), TEST_ENGINE);
        await client.query('COMMIT');
      }
      assert.deepEqual(await seqScans(client), before);
    } finally {
      client.release();
    }
  });

  // A connection's statements are planned once, on its first batch (a cached generic plan). Made
  // on a table of a page or two, where a scan is cheapest, and kept, that plan would scan the
  // table for every key however large the table grows. Both ways a batch is applied are checked: the
  // engine's own transactions, and applyBatch inside a caller's.
  const appliers: Array<[string, (pool: Db) => (commands: PostingCommand[]) => Promise<PostingResult[]>]> = [
    [
      'by the engine',
      (pool) => {
        const engine = new LedgerEngine(pool, { ...TEST_ENGINE, maxConcurrentBatches: 1 });
        return (commands) => Promise.all(commands.map((c) => engine.post(c)));
      },
    ],
    ['by applyBatch in the caller\'s transaction', (pool) => (commands) => withTransaction(pool, (tx) => applyBatch(tx, commands, TEST_ENGINE))],
  ];
  for (const [how, applier] of appliers) {
    it(`keeps finding keys by index after its statements were first planned on tables that were nearly empty (${how})`, async () => {
      const account = (await bareAccounts(t.db, 1))[0]!;
      // One connection, new, so the statements are prepared afresh and the counts are its own.
      const pool = createPool(t.config.databaseUrl!, 1);
      const apply = applier(pool);
      try {
        await pool.query('TRUNCATE idempotency_keys');
        await pool.query('ANALYZE idempotency_keys');
        const batch = (size: number) => Array.from({ length: size }, () => deposit(account));
        // As when a service starts under load: a few lone commands, then batches.
        for (const size of [1, 1, 1, 1, 1, 100, 100, 100]) await apply(batch(size));
        // The table grows past what a scan per key could afford, with no new statistics.
        await pool.query(
          `INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response)
           SELECT 'bulk', 'b-' || i, '\\x00', 201, '{}' FROM generate_series(1, 20000) i`,
        );
        const before = await seqScans(pool);
        const results = await apply(batch(100));
        assert.ok(results.every((r) => r.kind === 'applied' && r.outcome.ok));
        assert.deepEqual(await seqScans(pool), before);
        // Planned once, not per batch: the cached generic plan served every run.
        const { rows } = await pool.query<{ name: string; generic_plans: number; custom_plans: number }>(
          `SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'ledger_%' ORDER BY name`,
        );
        assert.deepEqual(rows.map((r) => r.name.replace(/_v\d+$/, '')), ['ledger_read', 'ledger_write']);
        for (const r of rows) assert.ok(r.custom_plans === 0 && r.generic_plans >= 9, `${r.name}: ${r.generic_plans} generic, ${r.custom_plans} custom plans`);
      } finally {
        await pool.end();
      }
    });
  }
});

describe('concurrent batches', () => {
  let t: TestApp;
  before(async () => {
    t = await startApp();
  });
  after(async () => {
    await assertInvariants(t.db);
    await t.close();
  });

  it('many commands posted at once end exactly as if applied one by one in arrival order; retries replay', async () => {
    const clearing = await clearingAccount(t.db);
    // A few hot accounts that nearly every batch shares, and many that batches can split.
    const accounts = await bareAccounts(t.db, 30);
    const opening = 100;
    await withTransaction(t.db, (tx) =>
      applyBatch(tx, accounts.map((id) => ({ type: 'deposit', legs: [{ accountId: clearing, amount: -opening }, { accountId: id, amount: opening }] }) satisfies PostingCommand), TEST_ENGINE),
    );
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const pick = () => (random(3) === 0 ? accounts[random(3)]! : accounts[random(accounts.length)]!);
    const moves = Array.from({ length: 400 }, (_, i) => {
      const from = pick();
      let to = pick();
      while (to === from) to = pick();
      return { from, to, amount: 1 + random(60), key: `order-${i}` };
    });
    // What applying them one by one, in order, gives.
    const balances = new Map(accounts.map((id) => [id, opening]));
    const expected = moves.map(({ from, to, amount }) => {
      if (balances.get(from)! < amount) return 'insufficient_funds';
      balances.set(from, balances.get(from)! - amount);
      balances.set(to, balances.get(to)! + amount);
      return 'ok';
    });
    const command = ({ from, to, amount, key }: (typeof moves)[number]): PostingCommand => ({
      type: 'transfer',
      legs: [
        { accountId: from, amount: -amount },
        { accountId: to, amount },
      ],
      idempotency: {
        principal: 'order-test',
        key,
        requestHash: Buffer.alloc(32),
        render: (o) => ({ statusCode: o.ok ? 201 : 422, body: o.ok ? { balance: o.entries[0]!.balanceAfter } : { code: o.code } }),
      },
    });
    const engine = new LedgerEngine(t.db, { ...TEST_ENGINE, maxConcurrentBatches: 4, maxBatchSize: 32 });
    // In waves, so that commands also arrive while batches are running and finishing.
    const posted: Array<Promise<PostingResult>> = [];
    for (const [i, m] of moves.entries()) {
      posted.push(engine.post(command(m)));
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 1));
    }
    const results = await Promise.all(posted);
    assert.deepEqual(
      results.map((r) => (r.kind === 'applied' ? (r.outcome.ok ? 'ok' : r.outcome.code) : r.kind)),
      expected,
    );
    const { rows } = await t.db.query<{ id: number; balance: number }>(`SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[])`, [accounts]);
    assert.deepEqual(new Map(rows.map((r) => [r.id, r.balance])), balances);

    // Every key again, twice at once: each answered as it was first, nothing moves.
    const retried = await Promise.all(moves.flatMap((m) => [engine.post(command(m)), engine.post(command(m))]));
    retried.forEach((r, i) => {
      const first = results[Math.floor(i / 2)]!;
      assert.equal(r.kind, 'replayed');
      assert.deepEqual(r.kind === 'replayed' && r.response, first.kind === 'applied' && first.response);
    });
    const again = await t.db.query<{ id: number; balance: number }>(`SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[])`, [accounts]);
    assert.deepEqual(new Map(again.rows.map((r) => [r.id, r.balance])), balances);
  });

  it('a connection that loses its prepared statements under traffic: the batch is retried, each key moves money once', async () => {
    const clearing = await clearingAccount(t.db);
    const accounts = await bareAccounts(t.db, 8);
    await withTransaction(t.db, (tx) =>
      applyBatch(tx, accounts.map((id) => ({ type: 'deposit', legs: [{ accountId: clearing, amount: -1_000 }, { accountId: id, amount: 1_000 }] }) satisfies PostingCommand), TEST_ENGINE),
    );
    const transfer = (i: number): PostingCommand => ({
      type: 'transfer',
      legs: [
        { accountId: accounts[i % 8]!, amount: -(1 + (i % 5)) },
        { accountId: accounts[(i + 3) % 8]!, amount: 1 + (i % 5) },
      ],
      idempotency: { principal: 'lost-statements', key: `move-${i}`, requestHash: Buffer.alloc(32), render: (o) => ({ statusCode: o.ok ? 201 : 422, body: { ok: o.ok } }) },
    });
    // One connection, so that DEALLOCATE reaches the one the engine uses.
    const pool = createPool(t.config.databaseUrl!, 1);
    try {
      const engine = new LedgerEngine(pool, { ...TEST_ENGINE, maxConcurrentBatches: 1 });
      const first = await Promise.all(Array.from({ length: 30 }, (_, i) => engine.post(transfer(i))));
      await pool.query(`DEALLOCATE ${READ.name}`);
      await pool.query(`DEALLOCATE ${WRITE.name}`);
      // New commands and every earlier one again, at once, each sent twice.
      const second = await Promise.all(Array.from({ length: 60 }, (_, i) => [engine.post(transfer(i)), engine.post(transfer(i))]).flat());
      assert.ok(first.every((r) => r.kind === 'applied' && r.outcome.ok));
      second.forEach((r, n) => {
        const i = Math.floor(n / 2);
        if (i < 30) assert.equal(r.kind, 'replayed', `move-${i}`);
        else assert.ok(r.kind === 'replayed' || (r.kind === 'applied' && r.outcome.ok), `move-${i}`);
      });
      const { rows: prepared } = await pool.query<{ name: string }>(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'ledger_%' ORDER BY name`);
      assert.deepEqual(prepared.map((r) => r.name), [READ.name, WRITE.name]);
    } finally {
      await pool.end();
    }
    // Each of the 60 keys moved its money exactly once.
    const expected = new Map(accounts.map((id) => [id, 1_000]));
    for (let i = 0; i < 60; i++) {
      const [from, to] = transfer(i).legs;
      expected.set(from!.accountId, expected.get(from!.accountId)! + from!.amount);
      expected.set(to!.accountId, expected.get(to!.accountId)! + to!.amount);
    }
    const { rows } = await t.db.query<{ id: number; balance: number }>(`SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[])`, [accounts]);
    assert.deepEqual(new Map(rows.map((r) => [r.id, r.balance])), expected);
    const { rows: keys } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM idempotency_keys WHERE principal = 'lost-statements'`);
    assert.equal(keys[0]!.n, 60);
  });
});
