import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createPool, withClient, type Db } from '../src/db/pool.js';
import { withTransaction } from '../src/db/transaction.js';
import { execute, literal, prepare, runScript, type SqlScalar, type Statement } from '../src/db/script.js';
import { createTestDatabase } from './helpers.js';

// Values written into SQL text must come back exactly as they went in, whatever they hold,
// and must never be read as SQL: the ledger's scripts carry idempotency keys, notes and
// references that a client chose.
describe('scripts: literals, prepared statements, one round trip', () => {
  let db: Db;
  let drop: () => Promise<void>;
  before(async () => {
    const database = await createTestDatabase();
    drop = database.drop;
    db = createPool(database.url, 2);
  });
  after(async () => {
    await db.end();
    await drop();
  });

  /** What PostgreSQL reads from the literal, cast to `type`, as node-pg parses it back. */
  const readBack = async (value: Parameters<typeof literal>[0], type: string) =>
    (await db.query<{ v: unknown }>(`SELECT ${literal(value)}::${type} AS v`)).rows[0]!.v;

  const text = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\u0000') && Buffer.from(s).toString() === s);
  const hostile = [
    "'",
    "''",
    '\\',
    "\\'",
    '"',
    '\\"',
    '{',
    '}',
    ',',
    ' ',
    '',
    'NULL',
    'null',
    "'); DROP TABLE accounts; --",
    "\\'); DROP TABLE accounts; --",
    '$$',
    "E'\\x41'",
    '{"a","b"}',
    '\\x41',
    'a\nb\r\tc',
    'ünï©ødé 💸',
  ];

  it('writes any text, alone or in an array, so that it reads back unchanged', async () => {
    for (const s of hostile) {
      assert.equal(await readBack(s, 'text'), s);
      assert.deepEqual(await readBack([s, null, s], 'text[]'), [s, null, s]);
    }
    await fc.assert(
      fc.asyncProperty(text, fc.array(fc.option(text, { nil: null }), { maxLength: 8 }), async (s, array) => {
        assert.equal(await readBack(s, 'text'), s);
        assert.deepEqual(await readBack(array, 'text[]'), array);
      }),
      { numRuns: 300 },
    );
  });

  it('reads the same whether standard_conforming_strings is on or off', async () => {
    await withClient(db, async (client) => {
      await client.query('SET standard_conforming_strings = off');
      try {
        for (const s of hostile) {
          const { rows } = await client.query<{ v: string; a: string[] }>(`SELECT ${literal(s)}::text AS v, ${literal([s])}::text[] AS a`);
          assert.equal(rows[0]!.v, s);
          assert.deepEqual(rows[0]!.a, [s]);
        }
      } finally {
        await client.query('RESET standard_conforming_strings');
      }
    });
  });

  it('writes integers, booleans, times, bytes and NULL exactly', async () => {
    // Compared in the database with the same value sent as a parameter.
    const same = async (value: Parameters<typeof literal>[0], type: string) =>
      (await db.query<{ same: boolean }>(`SELECT (${literal(value)}::${type}) IS NOT DISTINCT FROM $1::${type} AS same`, [value])).rows[0]!.same;
    assert.equal(await same([0, 1, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, null], 'bigint[]'), true);
    assert.equal(await readBack(Number.MIN_SAFE_INTEGER, 'bigint'), Number.MIN_SAFE_INTEGER);
    assert.deepEqual(await readBack([true, false, null], 'boolean[]'), [true, false, null]);
    const at = new Date('2026-11-21T10:11:12.345Z');
    assert.equal(((await readBack(at, 'timestamptz')) as Date).toISOString(), at.toISOString());
    assert.deepEqual(((await readBack([at, null], 'timestamptz[]')) as Array<Date | null>).map((d) => d?.toISOString() ?? null), [at.toISOString(), null]);
    const bytes = Buffer.from([0, 1, 0x5c, 0x27, 0x22, 0xff]);
    assert.deepEqual(await readBack(bytes, 'bytea'), bytes);
    assert.equal(await same([bytes, null], 'bytea[]'), true);
    assert.equal(await readBack(null, 'text'), null);
    assert.deepEqual(await readBack([], 'uuid[]'), []);
  });

  it('refuses what it cannot write exactly: fractions, unsafe integers, NaN, NUL, invalid dates', () => {
    const refused: SqlScalar[] = [1.5, 0.1, Number.MAX_SAFE_INTEGER + 1, -(2 ** 53), Number.NaN, Number.POSITIVE_INFINITY, 'a\u0000b', new Date(Number.NaN)];
    for (const value of refused) {
      assert.throws(() => literal(value), RangeError, String(value));
      assert.throws(() => literal([1, value]), RangeError, String(value));
    }
    assert.throws(() => literal({} as unknown as SqlScalar), TypeError);
    const statement: Statement = { name: 'two_values', types: ['int', 'int'], text: 'SELECT $1 + $2' };
    assert.throws(() => execute(statement, [1]), /takes 2 values, not 1/);
  });

  it('a prepared statement outlives a rolled-back transaction, and is prepared once per connection', async () => {
    const statement: Statement = { name: 'script_test_sum', types: ['bigint[]'], text: 'SELECT sum(x)::bigint AS total FROM unnest($1::bigint[]) AS x' };
    await withClient(db, async (client) => {
      await client.query('BEGIN');
      await prepare(client, [statement]);
      await client.query('ROLLBACK');
      await prepare(client, [statement]);
      const [result] = await runScript(client, [execute(statement, [[1, 2, Number.MAX_SAFE_INTEGER - 3]])]);
      assert.equal(result!.rows[0].total, Number.MAX_SAFE_INTEGER);
      const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = 'script_test_sum'`);
      assert.equal(rows[0]!.n, 1);
    });
  });

  it('a script that fails stops there: the statements after it, COMMIT included, do not run', async () => {
    await db.query('CREATE TABLE script_test_rows (n int PRIMARY KEY)');
    await withClient(db, async (client) => {
      await assert.rejects(
        runScript(client, ['BEGIN', 'INSERT INTO script_test_rows VALUES (1)', 'SELECT 1 / 0', 'INSERT INTO script_test_rows VALUES (2)', 'COMMIT']),
        /division by zero/,
      );
      // The transaction is still open, and aborted: nothing it did is visible, nothing can be committed.
      await assert.rejects(client.query('SELECT 1'), /current transaction is aborted/);
      await client.query('ROLLBACK');
      const results = await runScript(client, ['BEGIN', 'INSERT INTO script_test_rows VALUES (3)', 'SELECT count(*)::int AS n FROM script_test_rows', 'COMMIT']);
      assert.equal(results.length, 4);
      assert.equal(results[2]!.rows[0].n, 1);
    });
    const { rows } = await db.query<{ n: number }>('SELECT n FROM script_test_rows');
    assert.deepEqual(rows, [{ n: 3 }]);
  });

  it('prepares again when a connection lost its statements, and the transaction that noticed is retried', async () => {
    const statement: Statement = { name: 'script_test_echo', types: ['text'], text: 'SELECT $1::text AS v' };
    const single = createPool(db.options.connectionString!, 1);
    try {
      await withTransaction(single, async (tx) => {
        await prepare(tx, [statement]);
        await runScript(tx, [execute(statement, ['first'])]);
      });
      await single.query('DEALLOCATE script_test_echo');
      let attempts = 0;
      const value = await withTransaction(single, async (tx) => {
        attempts++;
        await prepare(tx, [statement]);
        const [result] = await runScript(tx, [execute(statement, ['second'])]);
        return result!.rows[0].v as string;
      });
      assert.equal(value, 'second');
      assert.equal(attempts, 2);
    } finally {
      await single.end();
    }
  });
});
