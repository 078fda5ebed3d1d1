import type { Queryable } from '../db/pool.js';
import type { PostedOutcome, TransactionType } from './types.js';

/** One line of a wallet's history: its side of one ledger transaction. */
export interface HistoryItem {
  id: string;
  type: TransactionType;
  direction: 'credit' | 'debit';
  amount: number;
  currency: string;
  balance_after: number;
  /** posted: the money moved; pending: held for a withdrawal; failed: the hold was released. */
  status: 'posted' | 'pending' | 'failed';
  counterparty: { handle: string; name: string | null } | null;
  note: string | null;
  created_at: string;
}

export interface HistoryFilter {
  type?: TransactionType;
  direction?: 'credit' | 'debit';
  from?: Date;
  to?: Date;
  /** Entries older than this entry id (exclusive): the decoded cursor. */
  beforeEntryId?: number;
  transactionId?: string;
}

interface Row {
  entry_id: number;
  transaction_id: string;
  type: TransactionType;
  amount: number;
  balance_after: number;
  created_at: Date;
  note: string | null;
  currency: string;
  counterparty_handle: string | null;
  counterparty_name: string | null;
  status: HistoryItem['status'];
}

function toItem(r: Row): HistoryItem {
  return {
    id: r.transaction_id,
    type: r.type,
    direction: r.amount > 0 ? 'credit' : 'debit',
    amount: Math.abs(r.amount),
    currency: r.currency,
    balance_after: r.balance_after,
    status: r.status,
    counterparty: r.counterparty_handle ? { handle: r.counterparty_handle, name: r.counterparty_name } : null,
    note: r.note,
    created_at: r.created_at.toISOString(),
  };
}

/**
 * Reads an account's history newest first: its entries, and its holds that have not been
 * posted (a pending withdrawal, or one whose hold was released). Holds draw their position
 * from the entries' sequence, so one cursor pages through both. The counterparty is the
 * wallet on the other side of the same ledger transaction that moved the most money the
 * opposite way; system accounts (gateway, bank) have no handle and show as null.
 */
export async function readHistory(
  db: Queryable,
  accountId: number,
  filter: HistoryFilter,
  limit: number,
): Promise<{ items: HistoryItem[]; entryIds: number[]; hasMore: boolean }> {
  // The statement holds only the filters given, so each combination is a plain indexed query
  // that is prepared once per connection and then runs on PostgreSQL's generic plan, without
  // planning again. The row count is written into the text, not passed as a parameter: under
  // "LIMIT $n" a generic plan is costed as reading a tenth of the account's history, so the
  // server would plan each page again (about 1.4 ms, more than running it) for ever.
  const pageRows = limit + 1;
  if (!Number.isSafeInteger(pageRows) || pageRows < 2 || pageRows > 1_001) throw new RangeError(`history page size out of range: ${limit}`);
  const values: unknown[] = [accountId];
  const entry: string[] = [];
  const hold: string[] = [];
  const param = (value: unknown) => `$${values.push(value)}`;
  if (filter.beforeEntryId !== undefined) {
    const p = param(filter.beforeEntryId);
    entry.push(`e.id < ${p}`);
    hold.push(`h.seq < ${p}`);
  }
  if (filter.type !== undefined) {
    const p = param(filter.type);
    entry.push(`e.type = ${p}`);
    hold.push(`h.type = ${p}`);
  }
  if (filter.direction !== undefined) {
    entry.push(filter.direction === 'credit' ? 'e.amount > 0' : 'e.amount < 0');
    if (filter.direction === 'credit') hold.push('false');
  }
  if (filter.from !== undefined) {
    const p = param(filter.from);
    entry.push(`e.created_at >= ${p}`);
    hold.push(`h.created_at >= ${p}`);
  }
  if (filter.to !== undefined) {
    const p = param(filter.to);
    entry.push(`e.created_at < ${p}`);
    hold.push(`h.created_at < ${p}`);
  }
  if (filter.transactionId !== undefined) {
    const p = param(filter.transactionId);
    entry.push(`e.transaction_id = ${p}`);
    hold.push(`h.id = ${p}`);
  }
  const and = (conditions: string[]) => conditions.map((c) => ` AND ${c}`).join('');
  const text = `
    (SELECT e.id AS entry_id, e.transaction_id, e.type, e.amount, e.balance_after, e.created_at,
            t.note, a.currency, cp.handle AS counterparty_handle, cp.name AS counterparty_name, 'posted' AS status
       -- The page of entries is cut first, and only its rows are joined and get a counterparty.
       -- Joined before the cut, the look-ups could run for every entry of the account: planning
       -- without knowing the account, PostgreSQL may guess it has a few entries, fetch them all
       -- and cut after (on a young ledger, 5,949 counterparty look-ups for three pages).
       FROM (SELECT e.* FROM entries e
              WHERE e.account_id = (SELECT $1::bigint)${and(entry)}
              -- Only entries_account_history gives this order. Were the account a constant at
              -- plan time ("= $1"), the planner would drop it from the sort key, and a backward
              -- walk of the primary key would look as cheap to it as it is costly in truth: past
              -- everyone else's newer entries. "(SELECT $1)" is known only when the query runs,
              -- so the account stays in the sort key whether the plan is custom or generic.
              ORDER BY e.account_id, e.id DESC
              LIMIT ${pageRows}) e
       JOIN ledger_transactions t ON t.id = e.transaction_id
       JOIN accounts a ON a.id = e.account_id
       LEFT JOIN LATERAL (
         SELECT w.handle, coalesce(u.business_name, u.name) AS name
           FROM entries o
           JOIN wallets w ON w.account_id = o.account_id
           JOIN users u ON u.id = w.user_id
          WHERE o.transaction_id = e.transaction_id
            AND o.account_id <> e.account_id
            AND sign(o.amount) <> sign(e.amount)
          ORDER BY abs(o.amount) DESC
          LIMIT 1
       ) cp ON true
      ORDER BY e.id DESC)
    UNION ALL
    (SELECT h.seq, h.id, h.type, -h.amount, h.balance_at_hold, h.created_at,
            NULL, a.currency, NULL, NULL, CASE h.status WHEN 'pending' THEN 'pending' ELSE 'failed' END
       FROM holds h JOIN accounts a ON a.id = h.account_id
      WHERE h.account_id = (SELECT $1::bigint) AND h.status <> 'posted'${and(hold)}
      ORDER BY h.account_id, h.seq DESC
      LIMIT ${pageRows})
    ORDER BY entry_id DESC
    LIMIT ${pageRows}`;
  const shape = [filter.beforeEntryId, filter.type, filter.direction, filter.from, filter.to, filter.transactionId]
    .map((v) => (v === undefined ? '0' : '1'))
    .join('');
  const found = await db.query<Row>({ name: `history-${shape}${filter.direction ?? ''}-${pageRows}`, text, values });
  const page = found.rows.slice(0, limit);
  return { items: page.map(toItem), entryIds: page.map((r) => r.entry_id), hasMore: found.rows.length > limit };
}

/** The history item of one account's side of a movement just posted, as history will show it. */
export function itemFromOutcome(
  outcome: PostedOutcome,
  accountId: number,
  details: { type: TransactionType; currency: string; counterparty: HistoryItem['counterparty']; note?: string | null },
): HistoryItem {
  const entry = outcome.entries.find((e) => e.accountId === accountId);
  if (!entry || !outcome.transactionId) throw new Error(`account ${accountId} has no entry in this movement`);
  return {
    id: outcome.transactionId,
    type: details.type,
    direction: entry.amount > 0 ? 'credit' : 'debit',
    amount: Math.abs(entry.amount),
    currency: details.currency,
    balance_after: entry.balanceAfter,
    status: 'posted',
    counterparty: details.counterparty,
    note: details.note ?? null,
    created_at: outcome.createdAt.toISOString(),
  };
}
