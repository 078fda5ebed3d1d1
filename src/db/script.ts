import pg from 'pg';
import type { Tx } from './pool.js';
import { isMissingStatement } from './errors.js';

/**
 * Scripts: several statements sent to PostgreSQL as one simple query, so they cost one round
 * trip between this process and the database, not one each.
 *
 * Why: on a small machine each round trip wakes the database's backend and then this process
 * again, and under load each wake-up waits for a core. Profiles of the service at half its
 * peak showed a fifth to a quarter of its time inside the socket writes that hand a statement over.
 * A batch of the ledger used to make four round trips (BEGIN, its read, its write, COMMIT);
 * as scripts it makes two: BEGIN with the read, the write with COMMIT.
 *
 * A simple query carries no parameters, so values are written into the text as literals by
 * `literal` below, which accepts only the types the ledger sends and refuses anything it
 * cannot write exactly. The heavy statements are prepared once per connection (SQL PREPARE)
 * and run with EXECUTE, so PostgreSQL still plans them once, not on every batch.
 *
 * Statements in a script run in order and stop at the first error, which PostgreSQL reports
 * for the whole script; the statements after it do not run. Inside a transaction block that
 * leaves the transaction aborted, so a script ending in COMMIT either committed everything
 * or (on any error the server reported) nothing.
 */

/** A value written into SQL text. Numbers must be safe integers: money is never a float. */
export type SqlScalar = string | number | boolean | Date | Buffer | null;
export type SqlValue = SqlScalar | readonly SqlScalar[];

/** A statement prepared once per connection and run by EXECUTE; `types` are its parameters'. */
export interface Statement {
  /** A plain SQL identifier, unique among the statements of the process. */
  name: string;
  types: readonly string[];
  text: string;
}

/** The text form PostgreSQL reads for a scalar, or null for SQL NULL. */
function scalarText(value: SqlScalar): string | null {
  if (value === null) return null;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`only safe integers are written into SQL, not ${value}`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new RangeError('an invalid date cannot be written into SQL');
    return value.toISOString();
  }
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'string') return value;
  throw new TypeError(`cannot write a ${typeof value} into SQL`);
}

/**
 * An array's text form: every element but NULL quoted, with backslash and double quote
 * escaped by a backslash, which is all the array syntax needs inside quotes.
 */
function arrayText(values: readonly SqlScalar[]): string {
  const elements = values.map((v) => {
    const text = scalarText(v);
    return text === null ? 'NULL' : `"${text.replace(/[\\"]/g, '\\$&')}"`;
  });
  return `{${elements.join(',')}}`;
}

/**
 * A SQL literal for a value, quoted by pg's own escapeLiteral (quotes doubled; an escape
 * string E'…' with backslashes doubled when there are any, so that its meaning does not
 * depend on standard_conforming_strings). NUL cannot be sent in a query (PostgreSQL text
 * cannot hold it, and the protocol ends the query text there), so a value holding one is
 * refused rather than cut short.
 */
export function literal(value: SqlValue): string {
  const text = Array.isArray(value) ? arrayText(value) : scalarText(value as SqlScalar);
  if (text === null) return 'NULL';
  if (text.includes('\u0000')) throw new RangeError('a value containing NUL cannot be written into SQL');
  return pg.escapeLiteral(text);
}

/** `EXECUTE name(…)` for a prepared statement and its values, in parameter order. */
export function execute(statement: Statement, values: readonly SqlValue[]): string {
  if (values.length !== statement.types.length) {
    throw new RangeError(`${statement.name} takes ${statement.types.length} values, not ${values.length}`);
  }
  return `EXECUTE ${statement.name}(${values.map(literal).join(', ')})`;
}

/** The statements each connection is known to hold. Connections are pg clients, reused by the pool. */
const preparedOn = new WeakMap<Tx, Set<string>>();

/**
 * Prepares, on this connection, each statement it does not hold yet. The first time (and
 * after `runScript` saw one go missing) the connection is asked which it holds; after that
 * this costs nothing. A prepared statement belongs to the session, not to the transaction it
 * was made in, so this may run inside a caller's transaction. It needs the session: behind a
 * pooler in transaction mode the next transaction may run on another server connection.
 */
export async function prepare(client: Tx, statements: readonly Statement[]): Promise<void> {
  let held = preparedOn.get(client);
  if (held && statements.every((s) => held!.has(s.name))) return;
  if (!held) {
    const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_prepared_statements WHERE from_sql');
    held = new Set(rows.map((r) => r.name));
    preparedOn.set(client, held);
  }
  for (const s of statements) {
    if (held.has(s.name)) continue;
    await client.query(`PREPARE ${s.name} (${s.types.join(', ')}) AS ${s.text}`);
    held.add(s.name);
  }
}

/** Runs a script of statements in one round trip; returns each statement's result, in order. */
export async function runScript(client: Tx, statements: readonly string[]): Promise<pg.QueryResult[]> {
  if (statements.length === 0) return [];
  try {
    const result: pg.QueryResult | pg.QueryResult[] = await client.query(statements.join(';\n'));
    return Array.isArray(result) ? result : [result];
  } catch (error) {
    // A prepared statement is gone (DISCARD or DEALLOCATE ran on this connection): ask again
    // next time. The error itself is retryable (db/errors.ts), and the retry prepares it.
    if (isMissingStatement(error)) preparedOn.delete(client);
    throw error;
  }
}
