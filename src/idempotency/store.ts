import { createHash } from 'node:crypto';
import type { Queryable } from '../db/pool.js';
import { problem, type ErrorCode } from '../errors.js';

/** A response as first sent, kept so that retries get exactly the same answer. */
export interface StoredResponse {
  statusCode: number;
  body: unknown;
}

/** A business refusal as an answer kept under the key, so that a retry gets it again as it was. */
export function storedProblem(code: ErrorCode, detail?: string, extra?: Record<string, unknown>): StoredResponse {
  const body = problem(code, detail, extra);
  return { statusCode: body.status, body };
}

export interface IdempotencyClaim {
  /** Whose key this is: keys are scoped to the authenticated principal. */
  principal: string;
  key: string;
  requestHash: Buffer;
}

export interface StoredKey extends StoredResponse {
  requestHash: Buffer;
}

/**
 * Fingerprint of a request. Secrets (the PIN) are left out by the caller: a hash of a body
 * that contains a 4-digit PIN would give the PIN away to anyone who can read this table.
 */
export function requestHash(method: string, route: string, body: unknown): Buffer {
  return createHash('sha256').update(`${method} ${route}\n${stableJson(body)}`).digest();
}

function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
}

const mapKey = (principal: string, key: string) => `${principal}\u0000${key}`;

/** Looks up many keys at once; the map is keyed by `principal NUL key`. */
export async function findKeys(db: Queryable, claims: IdempotencyClaim[]): Promise<Map<string, StoredKey>> {
  const found = new Map<string, StoredKey>();
  if (claims.length === 0) return found;
  const { rows } = await db.query<{
    principal: string;
    key: string;
    request_hash: Buffer;
    status_code: number;
    response: unknown;
  }>(
    `SELECT k.principal, k.key, k.request_hash, k.status_code, k.response
       FROM idempotency_keys k
       JOIN unnest($1::text[], $2::text[]) AS c(principal, key) USING (principal, key)`,
    [claims.map((c) => c.principal), claims.map((c) => c.key)],
  );
  for (const r of rows) {
    found.set(mapKey(r.principal, r.key), { requestHash: r.request_hash, statusCode: r.status_code, body: r.response });
  }
  return found;
}

export function lookup(found: Map<string, StoredKey>, claim: IdempotencyClaim): StoredKey | undefined {
  return found.get(mapKey(claim.principal, claim.key));
}


/**
 * Records keys with their responses. Must run in the same database transaction as the work
 * the keys guard. A key inserted concurrently by another transaction makes this fail with a
 * unique violation, which rolls the work back; the caller retries and then finds the key.
 */
export async function storeKeys(db: Queryable, items: Array<IdempotencyClaim & StoredResponse>): Promise<void> {
  if (items.length === 0) return;
  await db.query(
    `INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int[], $5::jsonb[])`,
    [
      items.map((i) => i.principal),
      items.map((i) => i.key),
      items.map((i) => i.requestHash),
      items.map((i) => i.statusCode),
      items.map((i) => JSON.stringify(i.body)),
    ],
  );
}

export const IDEMPOTENCY_KEY_CONSTRAINT = 'idempotency_keys_pkey';

export interface IdempotentResponse extends StoredResponse {
  replayed: boolean;
}
