import type { Queryable } from '../db/pool.js';
import type { Effect } from '../ledger/types.js';

/** One line of the append-only audit log: who did what, to what, and why. */
export function auditRow(actorId: string, action: string, subject: string, detail: Record<string, unknown>): Effect {
  return { table: 'audit_log', row: { actor_id: actorId, action, subject, detail } };
}

/** Writes an audit line in the caller's transaction, for changes that do not go through the ledger. */
export async function writeAudit(tx: Queryable, line: Effect): Promise<void> {
  const r = line.row;
  await tx.query(`INSERT INTO audit_log (actor_id, action, subject, detail) VALUES ($1, $2, $3, $4)`, [r.actor_id, r.action, r.subject, r.detail]);
}
