import { withClient, type Db, type Tx } from '../db/pool.js';

export type Mismatch =
  | { kind: 'balance_differs_from_entries'; account_id: number; balance: number; entries_sum: number }
  | { kind: 'last_balance_after_differs'; account_id: number; balance: number; balance_after: number }
  | { kind: 'customer_balance_negative'; account_id: number; balance: number }
  | { kind: 'held_differs_from_holds'; account_id: number; held: number; pending_holds: number }
  | { kind: 'available_negative'; account_id: number; balance: number; held: number }
  | { kind: 'transaction_does_not_balance'; transaction_id: string; sum: number }
  | { kind: 'total_balance_not_zero'; total_balance: number };

export interface Reconciliation {
  ok: boolean;
  checked_accounts: number;
  checked_transactions: number;
  total_balance: number;
  mismatches: Mismatch[];
}

const MAX_REPORTED = 100;

/**
 * Recomputes every balance from the entries and checks the ledger's invariants: each cached
 * balance equals the sum of its entries and its latest balance_after, each held amount
 * equals the account's pending holds, every ledger transaction sums to zero, no customer
 * balance (or balance minus holds) is negative, and all balances sum to zero.
 * Runs in one REPEATABLE READ snapshot so that concurrent postings cannot show as mismatches.
 */
export function reconcile(db: Db): Promise<Reconciliation> {
  return withClient(db, reconcileOn);
}

async function reconcileOn(db: Tx): Promise<Reconciliation> {
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const accounts = await db.query<{
      id: number;
      kind: string;
      balance: number;
      entries_sum: number;
      last_balance_after: number | null;
      held: number;
      pending_holds: number;
    }>(
      `SELECT a.id, a.kind, a.balance, a.held,
              coalesce(s.total, 0) AS entries_sum,
              coalesce((SELECT sum(h.amount) FROM holds h WHERE h.account_id = a.id AND h.status = 'pending'), 0) AS pending_holds,
              (SELECT e.balance_after FROM entries e WHERE e.account_id = a.id ORDER BY e.id DESC LIMIT 1)
                AS last_balance_after
         FROM accounts a
         LEFT JOIN (SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id) s
           ON s.account_id = a.id
        ORDER BY a.id`,
    );
    const unbalanced = await db.query<{ transaction_id: string; sum: number }>(
      `SELECT transaction_id, sum(amount) AS sum FROM entries
        GROUP BY transaction_id HAVING sum(amount) <> 0 OR count(*) < 2
        LIMIT ${MAX_REPORTED}`,
    );
    const counted = await db.query<{ n: number }>(`SELECT count(*)::bigint AS n FROM ledger_transactions`);
    await db.query('COMMIT');

    const mismatches: Mismatch[] = [];
    let total = 0;
    for (const a of accounts.rows) {
      total += a.balance;
      if (a.balance !== a.entries_sum) {
        mismatches.push({ kind: 'balance_differs_from_entries', account_id: a.id, balance: a.balance, entries_sum: a.entries_sum });
      }
      if (a.last_balance_after !== null && a.last_balance_after !== a.balance) {
        mismatches.push({ kind: 'last_balance_after_differs', account_id: a.id, balance: a.balance, balance_after: a.last_balance_after });
      }
      if (a.kind === 'customer' && a.balance < 0) {
        mismatches.push({ kind: 'customer_balance_negative', account_id: a.id, balance: a.balance });
      }
      if (a.held !== a.pending_holds) {
        mismatches.push({ kind: 'held_differs_from_holds', account_id: a.id, held: a.held, pending_holds: a.pending_holds });
      }
      if (a.kind === 'customer' && a.balance - a.held < 0) {
        mismatches.push({ kind: 'available_negative', account_id: a.id, balance: a.balance, held: a.held });
      }
    }
    for (const t of unbalanced.rows) mismatches.push({ kind: 'transaction_does_not_balance', ...t });
    if (total !== 0) mismatches.push({ kind: 'total_balance_not_zero', total_balance: total });
    return {
      ok: mismatches.length === 0,
      checked_accounts: accounts.rows.length,
      checked_transactions: counted.rows[0]!.n,
      total_balance: total,
      mismatches: mismatches.slice(0, MAX_REPORTED),
    };
  } catch (error) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
