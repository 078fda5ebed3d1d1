import type { Tx } from '../db/pool.js';
import { execute, literal, runScript, type Statement } from '../db/script.js';
import type { IdempotencyClaim, StoredResponse } from '../idempotency/store.js';
import { assert } from './evaluate.js';
import type { BatchState } from './batch-read.js';
import type { Effect, PostedOutcome, PostingCommand } from './types.js';

export interface Posted {
  command: PostingCommand;
  outcome: PostedOutcome;
}

// One statement writes a whole batch, set-wise: ledger transactions, entries (in order, so
// that entry ids follow balance_after), one update per touched account (balance and held
// incremented, today's outgoing money, PIN attempt counter), holds placed and settled, and
// idempotency keys with their responses (sent as one JSON array: cheaper than an array of
// jsonb literals, which would be escaped and parsed twice). Balances are only ever
// incremented, never overwritten from memory, and the statement itself checks that the
// results agree with the batch's arithmetic: a disagreement raises and aborts the batch.
export const WRITE: Statement = {
  name: 'ledger_write_v6',
  // In parameter order: the batch's time; ledger transactions; entries; account updates
  // (with today's date at $14); holds placed; holds settled; idempotency keys; and the
  // balances, held amounts and outgoing money the accounts must end with.
  types: [
    'timestamptz', 'uuid[]', 'text[]', 'text[]', 'text[]',
    'uuid[]', 'bigint[]', 'bigint[]', 'bigint[]', 'text[]',
    'bigint[]', 'bigint[]', 'bigint[]', 'date', 'bigint[]', 'boolean[]', 'int[]', 'timestamptz[]',
    'uuid[]', 'bigint[]', 'bigint[]', 'text[]', 'bigint[]',
    'uuid[]', 'text[]', 'uuid[]',
    'text[]', 'text[]', 'bytea[]', 'int[]', 'jsonb',
    'bigint[]', 'bigint[]', 'bigint[]',
  ],
  text: `
WITH lt AS (
  INSERT INTO ledger_transactions (id, type, note, reference, created_at)
  SELECT id, type, note, reference, $1 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS t(id, type, note, reference)
), en AS (
  INSERT INTO entries (transaction_id, account_id, amount, balance_after, type, created_at)
  SELECT t, a, m, b, y, $1 FROM unnest($6::uuid[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[]) WITH ORDINALITY AS e(t, a, m, b, y, n)
   ORDER BY n
), ac AS (
  UPDATE accounts a SET balance = a.balance + d.balance, held = a.held + d.held,
         outgoing_amount = CASE WHEN d.outgoing = 0 THEN a.outgoing_amount
                                WHEN a.outgoing_day = $14::date THEN a.outgoing_amount + d.outgoing
                                ELSE d.outgoing END,
         outgoing_day = CASE WHEN d.outgoing = 0 THEN a.outgoing_day ELSE $14::date END,
         pin_failures = CASE WHEN d.pin_changed THEN d.pin_failures ELSE a.pin_failures END,
         pin_locked_until = CASE WHEN d.pin_changed THEN d.pin_locked_until ELSE a.pin_locked_until END
    FROM unnest($11::bigint[], $12::bigint[], $13::bigint[], $15::bigint[], $16::boolean[], $17::int[], $18::timestamptz[])
         AS d(id, balance, held, outgoing, pin_changed, pin_failures, pin_locked_until)
   WHERE a.id = d.id AND a.id = ANY($11::bigint[])
  RETURNING a.id, a.balance, a.held, CASE WHEN a.outgoing_day = $14::date THEN a.outgoing_amount ELSE 0 END AS outgoing
), hi AS (
  INSERT INTO holds (id, account_id, amount, type, balance_at_hold, created_at)
  SELECT id, a, m, y, b, $1 FROM unnest($19::uuid[], $20::bigint[], $21::bigint[], $22::text[], $23::bigint[]) AS h(id, a, m, y, b)
), hu AS (
  UPDATE holds h SET status = s.status, transaction_id = s.tx, settled_at = $1
    FROM unnest($24::uuid[], $25::text[], $26::uuid[]) AS s(id, status, tx)
   WHERE h.id = s.id AND h.status = 'pending'
  RETURNING h.id
), ik AS (
  INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response)
  SELECT k.principal, k.key, k.request_hash, k.status_code, r.response
    FROM unnest($27::text[], $28::text[], $29::bytea[], $30::int[]) WITH ORDINALITY AS k(principal, key, request_hash, status_code, n)
    JOIN jsonb_array_elements($31::jsonb) WITH ORDINALITY AS r(response, n) USING (n)
)
SELECT ledger_assert((SELECT count(*) FROM ac) = cardinality($11::bigint[]), 'every touched account was updated')
   AND ledger_assert(NOT EXISTS (
         SELECT 1 FROM ac JOIN unnest($11::bigint[], $32::bigint[], $33::bigint[], $34::bigint[]) AS x(id, balance, held, outgoing) USING (id)
          WHERE ac.balance <> x.balance OR ac.held <> x.held OR ac.outgoing <> x.outgoing),
       'accounts agree with the batch''s entries, holds and outgoing money')
   AND ledger_assert((SELECT count(*) FROM hu) = cardinality($24::uuid[]), 'every settled hold was pending') AS ok`,
};

const EFFECT_TABLES = new Set<Effect['table']>(['merchant_payments', 'audit_log']);

/**
 * Writes a batch: one statement for the ledger, one INSERT per table of effects, then
 * `closing` (COMMIT), all in one round trip. Any error stops the script before COMMIT.
 */
export async function writeBatch(
  tx: Tx,
  posted: Posted[],
  keys: Array<IdempotencyClaim & StoredResponse>,
  state: BatchState,
  closing: readonly string[],
): Promise<void> {
  const moving = posted.filter((p) => p.outcome.transactionId !== null);
  const entries = moving.flatMap((p) => p.outcome.entries.map((e) => ({ e, p })));
  const deltas = new Map<number, { balance: number; held: number; outgoing: number }>();
  const delta = (id: number) => deltas.get(id) ?? deltas.set(id, { balance: 0, held: 0, outgoing: 0 }).get(id)!;
  for (const p of posted) {
    for (const e of p.outcome.entries) delta(e.accountId).balance += e.amount;
    const hold = p.command.hold;
    if (hold) delta(hold.accountId).held += hold.action === 'place' ? hold.amount : -hold.amount;
    const limit = p.command.dailyLimit;
    if (limit) delta(limit.accountId).outgoing += limit.amount;
  }
  for (const account of state.accounts.values()) if (account.pin.dirty) delta(account.id);
  const accountIds = [...deltas.keys()].sort((a, b) => a - b);
  const account = (id: number) => state.accounts.get(id)!;
  const placed = posted.filter((p) => p.command.hold?.action === 'place');
  const settled = posted.filter((p) => p.command.hold && p.command.hold.action !== 'place');
  const nothing = accountIds.length === 0 && keys.length === 0;
  const write = nothing
    ? []
    : [
        execute(WRITE, [
          state.now,
          moving.map((p) => p.outcome.transactionId),
          moving.map((p) => p.command.type),
          moving.map((p) => p.command.note ?? null),
          moving.map((p) => p.command.reference ?? null),
          entries.map(({ p }) => p.outcome.transactionId),
          entries.map(({ e }) => e.accountId),
          entries.map(({ e }) => e.amount),
          entries.map(({ e }) => e.balanceAfter),
          entries.map(({ p }) => p.command.type),
          accountIds,
          accountIds.map((id) => deltas.get(id)!.balance),
          accountIds.map((id) => deltas.get(id)!.held),
          state.today,
          accountIds.map((id) => deltas.get(id)!.outgoing),
          accountIds.map((id) => account(id).pin.dirty),
          accountIds.map((id) => account(id).pin.failures),
          accountIds.map((id) => account(id).pin.lockedUntil),
          placed.map((p) => p.command.hold!.id),
          placed.map((p) => p.command.hold!.accountId),
          placed.map((p) => p.command.hold!.amount),
          placed.map((p) => p.command.type),
          placed.map((p) => p.outcome.hold!.balance),
          settled.map((p) => p.command.hold!.id),
          settled.map((p) => (p.command.hold!.action === 'post' ? 'posted' : 'released')),
          settled.map((p) => p.outcome.transactionId),
          keys.map((k) => k.principal),
          keys.map((k) => k.key),
          keys.map((k) => k.requestHash),
          keys.map((k) => k.statusCode),
          JSON.stringify(keys.map((k) => k.body)),
          accountIds.map((id) => account(id).balance),
          accountIds.map((id) => account(id).held),
          accountIds.map((id) => state.outgoing.get(id) ?? 0),
        ]),
      ];
  await runScript(tx, [...write, ...writeEffects(posted), ...closing]);
}

/** Rows that belong with the movements: one INSERT per table per batch, in the write's script. */
function writeEffects(posted: Posted[]): string[] {
  const byTable = new Map<Effect['table'], Array<Record<string, unknown>>>();
  for (const p of posted) {
    for (const effect of p.command.effects?.(p.outcome) ?? []) {
      assert(EFFECT_TABLES.has(effect.table), `effects may write ${effect.table}`);
      byTable.set(effect.table, [...(byTable.get(effect.table) ?? []), effect.row]);
    }
  }
  return [...byTable].map(([table, rows]) => {
    const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    assert(columns.every((c) => /^[a-z_]+$/.test(c)), 'effect columns are plain names');
    const list = columns.join(', ');
    return `INSERT INTO ${table} (${list}) SELECT ${list} FROM json_populate_recordset(NULL::${table}, ${literal(JSON.stringify(rows))})`;
  });
}
