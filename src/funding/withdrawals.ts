import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Db, Tx } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { DomainError } from '../errors.js';
import type { LedgerEngine } from '../ledger/engine.js';
import type { SystemAccounts } from '../ledger/accounts.js';
import type { PostingOutcome } from '../ledger/types.js';
import type { Principal } from '../auth/service.js';
import type { IdempotencyClaim, IdempotentResponse } from '../idempotency/store.js';
import { runIdempotent } from '../idempotency/run.js';
import { isUuid } from '../ids.js';
import { ownWallet, refusal, type WalletService } from '../wallets/service.js';
import type { BankAccounts } from './bank-accounts.js';
import { BankError, type BankClient, type PayoutStatus } from './bank-client.js';

export type WithdrawalStatus = 'pending' | 'submitted' | 'succeeded' | 'failed';

export interface WithdrawalView {
  id: string;
  status: 'pending' | 'succeeded' | 'failed';
  amount: number;
  currency: string;
  bank_account: { id: string; ifsc: string; account_number_last4: string };
  failure_reason: string | null;
  created_at: string;
  updated_at: string;
}

export interface BankEvent {
  id: string;
  type: 'payout.succeeded' | 'payout.failed';
  data: { reference: string; amount: number; reason?: string };
}

export type BankEventOutcome = 'posted' | 'released' | 'already_processed' | 'flagged';

export interface WithdrawalOptions {
  timeoutSeconds: number;
  /** Submit the payout right after the hold commits; recovery submits it otherwise. */
  submitImmediately: boolean;
}

interface Row {
  id: string;
  wallet_id: string;
  account_id: number;
  amount: number;
  currency: string;
  status: WithdrawalStatus;
  failure_reason: string | null;
  bank_account_id: string;
  account_number: string;
  ifsc: string;
  submitted_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const SELECT = `SELECT w.id, w.wallet_id, wa.account_id, w.amount, w.currency, w.status, w.failure_reason, w.bank_account_id,
                       b.account_number, b.ifsc, w.submitted_at, w.created_at, w.updated_at
                  FROM withdrawals w JOIN wallets wa ON wa.id = w.wallet_id JOIN bank_accounts b ON b.id = w.bank_account_id`;

function toView(r: Row): WithdrawalView {
  return {
    id: r.id,
    // "submitted" is our business with the bank; the customer sees it as pending.
    status: r.status === 'submitted' ? 'pending' : r.status,
    amount: r.amount,
    currency: r.currency,
    bank_account: { id: r.bank_account_id, ifsc: r.ifsc, account_number_last4: r.account_number.slice(-4) },
    failure_reason: r.failure_reason,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

/**
 * Withdrawals are two-phase: the request places a hold (available balance drops, balance
 * does not); the bank's answer posts the hold (the money leaves, type `withdrawal`) or
 * releases it. The withdrawal id is the hold id, the bank's payout reference and, once
 * posted, the ledger transaction id, so one id follows the money everywhere.
 */
export class WithdrawalService {
  constructor(
    private readonly db: Db,
    private readonly engine: LedgerEngine,
    private readonly wallets: WalletService,
    private readonly bankAccounts: BankAccounts,
    private readonly bank: BankClient,
    private readonly systemAccounts: SystemAccounts,
    private readonly options: WithdrawalOptions,
    private readonly log: FastifyBaseLogger,
  ) {}

  async withdraw(principal: Principal, input: { amount: number; pin: string; bankAccountId: string }, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    const wallet = ownWallet(principal);
    this.wallets.assertAmountAllowed(input.amount);
    await this.bankAccounts.own(principal.userId, input.bankAccountId);
    const id = randomUUID();
    const response = await runIdempotent(this.db, claim, async (tx) => {
      const [held] = await this.engine.apply(tx, [
        {
          type: 'withdrawal',
          legs: [],
          hold: { id, accountId: wallet.accountId, amount: input.amount, action: 'place' },
          pin: this.wallets.pinFor(principal, input.pin),
          dailyLimit: this.wallets.dailyLimit(wallet.accountId, input.amount),
        },
      ]);
      const outcome = (held as { outcome: PostingOutcome }).outcome;
      if (!outcome.ok) return refusal(outcome.code);
      await tx.query(
        `INSERT INTO withdrawals (id, wallet_id, bank_account_id, hold_id, amount, currency)
         SELECT $1, w.id, $3, $1, $4, w.currency FROM wallets w WHERE w.id = $2`,
        [id, wallet.id, input.bankAccountId, input.amount],
      );
      return { statusCode: 202, body: { withdrawal_id: id, status: 'pending', amount: input.amount } };
    });
    if (!response.replayed && response.statusCode === 202 && this.options.submitImmediately) {
      // The answer does not wait for the bank; recovery picks up anything this misses.
      void this.submit(id).catch((error: unknown) => this.log.warn({ err: error, withdrawal: id }, 'payout submission failed; recovery will retry'));
    }
    return response;
  }

  async get(principal: Principal, id: string): Promise<WithdrawalView> {
    const wallet = ownWallet(principal);
    const row = isUuid(id) ? (await this.db.query<Row>(`${SELECT} WHERE w.id = $1`, [id])).rows[0] : undefined;
    if (!row || row.wallet_id !== wallet.id) throw new DomainError('withdrawal_not_found');
    return toView(row);
  }

  /**
   * Submits the payout of a pending withdrawal, at most once. The row stays locked while the
   * bank is called, so no two workers submit it; if this process dies after the bank got the
   * payout but before recording it, the bank's own record says so and the next attempt only
   * records it. `checkFirst` asks the bank before submitting (recovery does).
   */
  async submit(id: string, checkFirst = false): Promise<WithdrawalStatus | undefined> {
    return withTransaction(this.db, async (tx) => {
      const { rows } = await tx.query<Row>(`${SELECT} WHERE w.id = $1 AND w.status = 'pending' FOR UPDATE OF w SKIP LOCKED`, [id]);
      const row = rows[0];
      if (!row) return undefined;
      const known = checkFirst ? await this.bank.status(id) : undefined;
      const status =
        known ?? (await this.bank.submit({ reference: id, amount: row.amount, currency: row.currency, accountNumber: row.account_number, ifsc: row.ifsc }));
      await tx.query(`UPDATE withdrawals SET status = 'submitted', submitted_at = now(), updated_at = now() WHERE id = $1`, [id]);
      if (status === 'succeeded') return this.settle(tx, { ...row, status: 'submitted' }, 'succeeded', undefined);
      if (status === 'failed' || status === 'cancelled') return this.settle(tx, { ...row, status: 'submitted' }, 'failed', `bank reported ${status}`);
      return 'submitted';
    });
  }

  /** Posts or releases the hold of a locked, unfinished withdrawal. */
  private async settle(tx: Tx, row: Row, result: 'succeeded' | 'failed', reason: string | undefined): Promise<WithdrawalStatus> {
    const hold = { id: row.id, accountId: row.account_id, amount: row.amount };
    const [settled] = await this.engine.apply(tx, [
      result === 'succeeded'
        ? {
            type: 'withdrawal',
            transactionId: row.id,
            legs: [
              { accountId: row.account_id, amount: -row.amount },
              { accountId: this.systemAccounts.id('bank_payouts'), amount: row.amount },
            ],
            hold: { ...hold, action: 'post' },
            reference: `withdrawal:${row.id}`,
            // The bank has paid out: a freeze cannot undo that.
            ignoreFrozen: true,
          }
        : { type: 'withdrawal', legs: [], hold: { ...hold, action: 'release' }, ignoreFrozen: true },
    ]);
    const outcome = (settled as { outcome: PostingOutcome }).outcome;
    if (!outcome.ok) throw new Error(`settling withdrawal ${row.id} was refused: ${outcome.code}`);
    // A reason is kept only for a payout that failed; callers pass the one that would apply.
    await tx.query(`UPDATE withdrawals SET status = $2, failure_reason = $3, updated_at = now() WHERE id = $1`, [
      row.id,
      result,
      result === 'failed' ? (reason ?? null) : null,
    ]);
    return result;
  }

  /** Applies one verified bank callback; duplicates and late callbacks change nothing. */
  async handleEvent(event: BankEvent): Promise<BankEventOutcome> {
    if (!isUuid(event.data.reference)) throw new DomainError('withdrawal_not_found');
    const result = await withTransaction(this.db, async (tx) => {
      const row = (await tx.query<Row>(`${SELECT} WHERE w.id = $1 FOR UPDATE OF w`, [event.data.reference])).rows[0];
      if (!row) throw new DomainError('withdrawal_not_found');
      if ((await tx.query(`SELECT 1 FROM bank_events WHERE id = $1`, [event.id])).rowCount) return { outcome: 'already_processed' as const };
      if (event.data.amount !== row.amount) {
        await this.flag(tx, row.id, `bank reported ${event.data.amount} in event ${event.id}`);
        return { mismatch: true as const };
      }
      let outcome: BankEventOutcome;
      const unfinished = row.status === 'pending' || row.status === 'submitted';
      if (unfinished) {
        const settled = await this.settle(tx, row, event.type === 'payout.succeeded' ? 'succeeded' : 'failed', event.data.reason ?? 'rejected by the bank');
        outcome = settled === 'succeeded' ? 'posted' : 'released';
      } else if ((row.status === 'succeeded') === (event.type === 'payout.succeeded')) {
        outcome = 'already_processed';
      } else {
        // The bank contradicts what we settled (paid after we released, or failed after it paid).
        await this.flag(tx, row.id, `bank sent ${event.type} after the withdrawal was ${row.status} (event ${event.id})`);
        outcome = 'flagged';
      }
      await tx.query(`INSERT INTO bank_events (id, withdrawal_id, type, outcome) VALUES ($1, $2, $3, $4)`, [event.id, row.id, event.type, outcome]);
      return { outcome };
    });
    if ('mismatch' in result) throw new DomainError('amount_mismatch', 'The amount does not match the withdrawal; it is flagged for review');
    return result.outcome;
  }

  private async flag(tx: Tx, id: string, reason: string): Promise<void> {
    this.log.error({ withdrawal: id, reason }, 'withdrawal flagged for review');
    await tx.query(`UPDATE withdrawals SET flagged = true, flag_reason = $2, updated_at = now() WHERE id = $1`, [id, reason]);
  }

  /**
   * Finishes what a crash, a lost callback or a silent bank left behind: submits pending
   * withdrawals the bank does not have, settles submitted ones the bank has settled, and
   * cancels (then releases) payouts the bank has not settled within the timeout.
   */
  async recover(olderThanSeconds = 5): Promise<{ submitted: number; settled: number; timedOut: number }> {
    const counts = { submitted: 0, settled: 0, timedOut: 0 };
    const pending = await this.db.query<{ id: string }>(
      `SELECT id FROM withdrawals WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 100`,
      [olderThanSeconds],
    );
    for (const { id } of pending.rows) {
      const status = await this.submit(id, true).catch((error: unknown) => this.logFailure(id, error));
      if (status) counts.submitted++;
    }
    const submitted = await this.db.query<{ id: string; overdue: boolean }>(
      `SELECT id, submitted_at < now() - make_interval(secs => $1) AS overdue
         FROM withdrawals WHERE status = 'submitted' AND submitted_at < now() - make_interval(secs => $2)
        ORDER BY submitted_at LIMIT 100`,
      [this.options.timeoutSeconds, olderThanSeconds],
    );
    for (const { id, overdue } of submitted.rows) {
      const outcome = await this.reconcileWithBank(id, overdue).catch((error: unknown) => this.logFailure(id, error));
      if (outcome === 'settled') counts.settled++;
      if (outcome === 'timed_out') counts.timedOut++;
    }
    return counts;
  }

  private async reconcileWithBank(id: string, overdue: boolean): Promise<'settled' | 'timed_out' | 'waiting'> {
    let status: PayoutStatus | undefined = await this.bank.status(id);
    if (status === 'processing' && overdue) status = await this.bank.cancel(id);
    // The bank never got it (it can only be because our submit was lost): nothing left the bank.
    if (status === undefined) status = 'cancelled';
    if (status === 'processing') return 'waiting';
    const timedOut = status === 'cancelled';
    return withTransaction(this.db, async (tx) => {
      const row = (await tx.query<Row>(`${SELECT} WHERE w.id = $1 AND w.status = 'submitted' FOR UPDATE OF w SKIP LOCKED`, [id])).rows[0];
      if (!row) return 'waiting' as const;
      await this.settle(tx, row, status === 'succeeded' ? 'succeeded' : 'failed', timedOut ? 'the bank did not settle the payout in time; cancelled' : 'rejected by the bank');
      return timedOut ? ('timed_out' as const) : ('settled' as const);
    });
  }

  private logFailure(id: string, error: unknown): undefined {
    const level = error instanceof BankError ? 'warn' : 'error';
    this.log[level]({ err: error, withdrawal: id }, 'withdrawal recovery step failed; will retry');
    return undefined;
  }
}
