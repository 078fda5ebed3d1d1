import { isUuid } from '../ids.js';
import type { Db } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { DomainError } from '../errors.js';
import type { Reconciliation } from '../ledger/reconcile.js';
import type { LedgerWatch } from '../jobs/ledger-watch.js';
import { auditRow, writeAudit } from './audit.js';

export interface FrozenView {
  id: string;
  handle: string;
  status: 'active' | 'frozen';
}

export class AdminService {
  constructor(
    private readonly db: Db,
    private readonly watch: LedgerWatch,
  ) {}

  /** Runs the same check as the schedule, so the metrics always show the latest outcome. */
  reconciliation(): Promise<Reconciliation> {
    return this.watch.check();
  }

  /** Freezes or unfreezes a wallet and records who did it in the append-only audit log. */
  async setStatus(actorId: string, walletId: string, status: 'active' | 'frozen', reason: string | undefined): Promise<FrozenView> {
    if (!isUuid(walletId)) throw new DomainError('wallet_not_found');
    return withTransaction(this.db, async (tx) => {
      const { rows } = await tx.query<{ id: string; handle: string; previous: string }>(
        `UPDATE wallets w SET status = $2 FROM wallets old
          WHERE w.id = $1 AND old.id = w.id
          RETURNING w.id, w.handle, old.status AS previous`,
        [walletId, status],
      );
      const row = rows[0];
      if (!row) throw new DomainError('wallet_not_found');
      await writeAudit(tx, auditRow(actorId, status === 'frozen' ? 'wallet.freeze' : 'wallet.unfreeze', `wallet:${walletId}`, { previous_status: row.previous, reason: reason ?? null }));
      return { id: row.id, handle: row.handle, status };
    });
  }
}
