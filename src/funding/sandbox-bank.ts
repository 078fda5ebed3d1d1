import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Db } from '../db/pool.js';
import { DomainError } from '../errors.js';
import { deliverSigned, type Delivery } from '../signatures.js';
import type { BankEvent } from './withdrawals.js';
import type { PayoutStatus } from './bank-client.js';

export type SandboxBankMode = 'manual' | 'succeed' | 'fail' | 'never';

export interface SandboxBankOptions {
  mode: SandboxBankMode;
  secret: string;
  webhookUrl: () => string;
  timeoutMs: number;
}

/**
 * Plays the bank in development and tests: a payout API that dedups by reference, answers
 * status and cancel queries, and settles payouts by calling the wallet's signed webhook over
 * real HTTP — at once (`succeed`, `fail`), never (`never`), or when told (`manual`).
 */
export class SandboxBank {
  constructor(
    private readonly db: Db,
    private readonly options: SandboxBankOptions,
    private readonly log: FastifyBaseLogger,
  ) {}

  async receive(payout: { reference: string; amount: number; currency: string; account_number: string; ifsc: string }): Promise<{ reference: string; status: PayoutStatus; submissions: number }> {
    const { rows } = await this.db.query<{ status: PayoutStatus; submissions: number; inserted: boolean }>(
      `INSERT INTO sandbox_bank_payouts (reference, amount, currency, account_number, ifsc, status)
       VALUES ($1, $2, $3, $4, $5, 'processing')
       ON CONFLICT (reference) DO UPDATE SET submissions = sandbox_bank_payouts.submissions + 1, updated_at = now()
       RETURNING status, submissions, (xmax = 0) AS inserted`,
      [payout.reference, payout.amount, payout.currency, payout.account_number, payout.ifsc],
    );
    const row = rows[0]!;
    if (row.inserted && (this.options.mode === 'succeed' || this.options.mode === 'fail')) {
      const outcome = this.options.mode === 'succeed' ? 'succeeded' : 'failed';
      // Like a real bank: accept now, call back a moment later.
      setTimeout(() => {
        this.complete(payout.reference, outcome).catch((error: unknown) => this.log.warn({ err: error }, 'sandbox bank callback failed'));
      }, 20).unref();
    }
    return { reference: payout.reference, status: row.status, submissions: row.submissions };
  }

  async status(reference: string): Promise<{ reference: string; status: PayoutStatus; submissions: number }> {
    const { rows } = await this.db.query<{ status: PayoutStatus; submissions: number }>(
      `SELECT status, submissions FROM sandbox_bank_payouts WHERE reference = $1`,
      [reference],
    );
    if (!rows[0]) throw new DomainError('withdrawal_not_found', 'The bank has no payout with this reference');
    return { reference, ...rows[0] };
  }

  async cancel(reference: string): Promise<{ cancelled: boolean; status: PayoutStatus }> {
    const { rows } = await this.db.query<{ status: PayoutStatus }>(
      `UPDATE sandbox_bank_payouts SET status = 'cancelled', updated_at = now() WHERE reference = $1 AND status = 'processing' RETURNING status`,
      [reference],
    );
    if (rows[0]) return { cancelled: true, status: 'cancelled' };
    return { cancelled: false, status: (await this.status(reference)).status };
  }

  /** Settles a payout (if still processing) and delivers the callback; a settled one is delivered again. */
  async complete(reference: string, outcome: 'succeeded' | 'failed'): Promise<Delivery> {
    const { rows } = await this.db.query<{ status: PayoutStatus; amount: number }>(
      `UPDATE sandbox_bank_payouts SET status = CASE WHEN status = 'processing' THEN $2 ELSE status END, updated_at = now()
        WHERE reference = $1 RETURNING status, amount`,
      [reference, outcome],
    );
    const payout = rows[0];
    if (!payout) throw new DomainError('withdrawal_not_found', 'The bank has no payout with this reference');
    if (payout.status === 'cancelled') throw new DomainError('validation_failed', 'The payout was cancelled; the bank will not settle it');
    const event: BankEvent = {
      id: `bevt_${randomBytes(12).toString('hex')}`,
      type: payout.status === 'succeeded' ? 'payout.succeeded' : 'payout.failed',
      data: { reference, amount: payout.amount, ...(payout.status === 'failed' ? { reason: 'account closed' } : {}) },
    };
    return this.deliver(event);
  }

  deliver(event: BankEvent): Promise<Delivery> {
    return deliverSigned(this.options.webhookUrl(), 'bank-signature', this.options.secret, event, this.options.timeoutMs);
  }
}
