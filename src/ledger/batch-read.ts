import type { Tx } from '../db/pool.js';
import { execute, runScript, type Statement } from '../db/script.js';
import type { StoredKey } from '../idempotency/store.js';
import type { PostingCommand } from './types.js';

export interface LockedAccount {
  id: number;
  kind: 'customer' | 'system';
  code: string | null;
  currency: string;
  balance: number;
  held: number;
  walletStatus: 'active' | 'frozen' | null;
  /** PIN attempts of the wallet's owner, counted on the account row under the same lock. */
  pin: PinState;
}

export interface LockedHold {
  id: string;
  accountId: number;
  amount: number;
  status: 'pending' | 'posted' | 'released';
}

export interface PinState {
  failures: number;
  /** A lock in force now. */
  locked: boolean;
  /** Any lock recorded, in force or expired: an expired one starts a new count. */
  hadLock: boolean;
  /** What the batch will write back, if the state changed. */
  lockedUntil: Date | null;
  dirty: boolean;
}

/** Everything a batch reads under its locks, and mutates as it evaluates commands in order. */
export interface BatchState {
  accounts: Map<number, LockedAccount>;
  holds: Map<string, LockedHold>;
  /** Outgoing money per account for the local day, for daily limits. */
  outgoing: Map<number, number>;
  /** Stored idempotency keys, by `principal NUL key`; commands of this batch are added as they are decided. */
  keys: Map<string, StoredKey>;
  now: Date;
  today: string;
}

export const keyOf = (principal: string, key: string) => `${principal}\u0000${key}`;

// One statement reads and locks everything a batch needs: the accounts, in id order, with
// today's outgoing money and their owners' PIN attempt counters; stored idempotency keys; and
// holds to settle. Every look-up is by primary key, whatever the planner guesses about the
// tables: keys through a LATERAL subquery with LIMIT 1, which cannot become a hash join over
// a sequential scan of every stored key.
//
// Locked rows are returned as they are once the lock is granted, so balances, held amounts,
// daily counters and PIN counters are exact. The other reads see the database as of the statement's start,
// which may be before a batch we waited for committed: that is safe for idempotency keys
// (a key we miss fails our insert, and the batch is retried) and for holds (every settlement
// first locks its withdrawal row, so no two can race), and it is why the daily counter lives
// on the account row rather than in a table of its own.
export const READ: Statement = {
  name: 'ledger_read_v6',
  types: ['bigint[]', 'text', 'text[]', 'text[]', 'uuid[]'],
  text: `
WITH acc AS (
  SELECT a.id, a.kind, a.code, a.currency, a.balance, a.held,
         (SELECT w.status FROM wallets w WHERE w.account_id = a.id) AS wallet_status,
         CASE WHEN a.outgoing_day = (now() AT TIME ZONE $2)::date THEN a.outgoing_amount ELSE 0 END AS outgoing,
         a.pin_failures, coalesce(a.pin_locked_until > now(), false) AS pin_locked, a.pin_locked_until IS NOT NULL AS pin_had_lock
    FROM accounts a
   WHERE a.id = ANY($1::bigint[])
   ORDER BY a.id
     FOR NO KEY UPDATE
)
SELECT now() AS now,
       (now() AT TIME ZONE $2)::date::text AS today,
       (SELECT coalesce(json_agg(acc), '[]') FROM acc) AS accounts,
       (SELECT coalesce(json_agg(k), '[]') FROM (
          SELECT k.principal, k.key, encode(k.request_hash, 'hex') AS hash, k.status_code, k.response
            FROM unnest($3::text[], $4::text[]) AS c(principal, key)
            CROSS JOIN LATERAL (SELECT * FROM idempotency_keys k WHERE k.principal = c.principal AND k.key = c.key LIMIT 1) k) k) AS keys,
       (SELECT coalesce(json_agg(h), '[]') FROM (
          SELECT id, account_id, amount, status FROM holds WHERE id = ANY($5::uuid[])) h) AS holds`,
};

interface ReadRow {
  now: Date;
  today: string;
  accounts: Array<{
    id: number;
    kind: LockedAccount['kind'];
    code: string | null;
    currency: string;
    balance: number;
    held: number;
    wallet_status: LockedAccount['walletStatus'];
    outgoing: number;
    pin_failures: number;
    pin_locked: boolean;
    pin_had_lock: boolean;
  }>;
  keys: Array<{ principal: string; key: string; hash: string; status_code: number; response: unknown }>;
  holds: Array<{ id: string; account_id: number; amount: number; status: LockedHold['status'] }>;
}

/**
 * Reads and locks the state of a batch. The read is the last statement of a script that
 * starts with `opening` (BEGIN, settings), all in one round trip.
 */
export async function readState(tx: Tx, commands: PostingCommand[], timeZone: string, opening: readonly string[]): Promise<BatchState> {
  const accountIds = new Set<number>();
  const claims: Array<{ principal: string; key: string }> = [];
  const holdIds: string[] = [];
  for (const c of commands) {
    for (const l of c.legs) accountIds.add(l.accountId);
    if (c.hold) accountIds.add(c.hold.accountId);
    if (c.hold && c.hold.action !== 'place') holdIds.push(c.hold.id);
    if (c.idempotency) claims.push(c.idempotency);
  }
  const read = execute(READ, [
    [...accountIds].sort((a, b) => a - b),
    timeZone,
    claims.map((c) => c.principal),
    claims.map((c) => c.key),
    holdIds,
  ]);
  const results = await runScript(tx, [...opening, read]);
  const rows = results.at(-1)!.rows as ReadRow[];
  const r = rows[0]!;
  return {
    now: r.now,
    today: r.today,
    accounts: new Map(
      r.accounts.map((a) => [
        a.id,
        {
          id: a.id,
          kind: a.kind,
          code: a.code,
          currency: a.currency,
          balance: a.balance,
          held: a.held,
          walletStatus: a.wallet_status,
          pin: { failures: a.pin_failures, locked: a.pin_locked, hadLock: a.pin_had_lock, lockedUntil: null, dirty: false },
        },
      ]),
    ),
    keys: new Map(r.keys.map((k) => [keyOf(k.principal, k.key), { requestHash: Buffer.from(k.hash, 'hex'), statusCode: k.status_code, body: k.response }])),
    holds: new Map(r.holds.map((h) => [h.id, { id: h.id, accountId: h.account_id, amount: h.amount, status: h.status }])),
    outgoing: new Map(r.accounts.map((a) => [a.id, a.outgoing])),
  };
}
