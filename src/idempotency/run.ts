import type { Db, Tx } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { isUniqueViolation } from '../db/errors.js';
import { DomainError } from '../errors.js';
import {
  findKeys,
  lookup,
  storeKeys,
  IDEMPOTENCY_KEY_CONSTRAINT,
  type IdempotencyClaim,
  type IdempotentResponse,
  type StoredResponse,
} from './store.js';

/** Answers from a stored key, or undefined when the key is new. */
export function fromStored(stored: { requestHash: Buffer; statusCode: number; body: unknown } | undefined, claim: IdempotencyClaim): IdempotentResponse | undefined {
  if (!stored) return undefined;
  if (!stored.requestHash.equals(claim.requestHash)) {
    throw new DomainError('idempotency_key_reused', 'This Idempotency-Key was used with a different request');
  }
  return { statusCode: stored.statusCode, body: stored.body, replayed: true };
}

/** Answers a finished key from the store, or undefined when there is none. */
export async function replayIfKnown(db: Db, claim: IdempotencyClaim): Promise<IdempotentResponse | undefined> {
  return fromStored(lookup(await findKeys(db, [claim]), claim), claim);
}

/**
 * Runs `work` and stores its response under the key in one database transaction, for
 * requests that lock rows of their own before the ledger (which does the same, set-wise,
 * for a whole batch). A finished key is answered before `work` runs at all.
 */
export async function runIdempotent(
  db: Db,
  claim: IdempotencyClaim,
  work: (tx: Tx) => Promise<StoredResponse & { store?: false }>,
): Promise<IdempotentResponse> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await withTransaction(db, async (tx) => {
        const replay = fromStored(lookup(await findKeys(tx, [claim]), claim), claim);
        if (replay) return replay;
        const { store, ...response } = await work(tx);
        // `store: false` (a wrong PIN) commits what the work did, but is no answer to keep.
        if (store !== false) await storeKeys(tx, [{ ...claim, ...response }]);
        return { ...response, replayed: false };
      });
    } catch (error) {
      if (attempt >= 2 || !isUniqueViolation(error, IDEMPOTENCY_KEY_CONSTRAINT)) throw error;
    }
  }
}
