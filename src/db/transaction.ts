import type { Db, Tx } from './pool.js';
import { isRetryable, isUnavailable } from './errors.js';

const MAX_ATTEMPTS = 5;

/**
 * Runs `fn` inside one database transaction. Serialization failures, deadlocks and lost
 * connections roll everything back and run `fn` again from the start, a bounded number of
 * times, so `fn` must derive all its decisions from what it reads inside the transaction.
 */
export async function withTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    let client: Tx | undefined;
    let committing = false;
    try {
      client = await db.connect();
      await client.query('BEGIN');
      const result = await fn(client);
      committing = true;
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (error) {
      if (client) {
        // A broken connection is destroyed rather than returned to the pool.
        const rolledBack = await client.query('ROLLBACK').then(
          () => true,
          () => false,
        );
        client.release(rolledBack ? undefined : true);
      }
      // A connection lost during COMMIT leaves the outcome unknown: the work may have
      // committed. Only the caller's idempotency key can tell, so never blindly run it again.
      if (attempt >= MAX_ATTEMPTS || !isRetryable(error) || (committing && isUnavailable(error))) throw error;
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 10 * attempt)));
    }
  }
}
