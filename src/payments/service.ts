import { isUuid } from '../ids.js';
import type { Db, Tx } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { DomainError } from '../errors.js';
import type { LedgerEngine } from '../ledger/engine.js';
import type { SystemAccounts } from '../ledger/accounts.js';
import type { Principal } from '../auth/service.js';
import type { IdempotencyClaim, IdempotentResponse } from '../idempotency/store.js';
import { runIdempotent } from '../idempotency/run.js';
import { ownWallet, type WalletService } from '../wallets/service.js';
import type { GatewayClient } from './gateway-client.js';

export type PaymentStatus = 'pending' | 'succeeded' | 'failed' | 'expired';

export interface PaymentView {
  id: string;
  status: PaymentStatus;
  amount: number;
  currency: string;
  wallet_id: string;
  transaction_id: string | null;
  gateway_reference: string | null;
  flagged: boolean;
  created_at: string;
  updated_at: string;
}

export interface GatewayEvent {
  id: string;
  type: 'payment.succeeded' | 'payment.failed';
  data: { payment_id: string; amount: number; currency: string; gateway_reference?: string };
}

/** What a webhook delivery did; the route answers 200 for all of these. */
export type EventOutcome = 'credited' | 'credited_after_expiry' | 'marked_failed' | 'already_processed' | 'ignored';

export interface PaymentOptions {
  checkoutUrl: (paymentId: string) => string;
  attemptTtlSeconds: number;
  recoveryAfterSeconds: number;
}


interface PaymentRow {
  id: string;
  wallet_id: string;
  account_id: number;
  amount: number;
  currency: string;
  status: PaymentStatus;
  transaction_id: string | null;
  gateway_reference: string | null;
  flagged: boolean;
  created_at: Date;
  updated_at: Date;
}

function toView(r: PaymentRow): PaymentView {
  return {
    id: r.id,
    status: r.status,
    amount: r.amount,
    currency: r.currency,
    wallet_id: r.wallet_id,
    transaction_id: r.transaction_id,
    gateway_reference: r.gateway_reference,
    flagged: r.flagged,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

const SELECT_PAYMENT = `SELECT p.id, p.wallet_id, w.account_id, p.amount, p.currency, p.status, p.transaction_id,
                               p.gateway_reference, p.flagged, p.created_at, p.updated_at
                          FROM payments p JOIN wallets w ON w.id = p.wallet_id`;

export class PaymentService {
  constructor(
    private readonly db: Db,
    private readonly engine: LedgerEngine,
    private readonly wallets: WalletService,
    private readonly systemAccounts: SystemAccounts,
    private readonly options: PaymentOptions,
  ) {}

  /** Creates a payment attempt. No money moves until the gateway's signed webhook says so. */
  async addMoney(principal: Principal, amount: number, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    const wallet = ownWallet(principal);
    this.wallets.assertAmountAllowed(amount);
    return runIdempotent(this.db, claim, async (tx) => {
      const { rows } = await tx.query<{ id: string; currency: string }>(
        `INSERT INTO payments (wallet_id, amount, currency)
         SELECT id, $2, currency FROM wallets WHERE id = $1 AND status = 'active'
         RETURNING id, currency`,
        [wallet.id, amount],
      );
      const payment = rows[0];
      if (!payment) throw new DomainError('wallet_frozen', 'A frozen wallet cannot add money');
      return {
        statusCode: 201,
        body: {
          payment_id: payment.id,
          status: 'pending',
          amount,
          currency: payment.currency,
          checkout_url: this.options.checkoutUrl(payment.id),
        },
      };
    });
  }

  async get(principal: Principal, paymentId: string): Promise<PaymentView> {
    const wallet = ownWallet(principal);
    const payment = isUuid(paymentId) ? await this.find(this.db, paymentId) : undefined;
    if (!payment || payment.wallet_id !== wallet.id) throw new DomainError('payment_not_found');
    return toView(payment);
  }

  /** For the sandbox gateway, which plays the outside world and may see every attempt. */
  async getForGateway(paymentId: string): Promise<PaymentView> {
    const payment = isUuid(paymentId) ? await this.find(this.db, paymentId) : undefined;
    if (!payment) throw new DomainError('payment_not_found');
    return toView(payment);
  }

  private async find(db: Db | Tx, id: string, forUpdate = false): Promise<PaymentRow | undefined> {
    const { rows } = await db.query<PaymentRow>(`${SELECT_PAYMENT} WHERE p.id = $1 ${forUpdate ? 'FOR UPDATE OF p' : ''}`, [id]);
    return rows[0];
  }

  /**
   * Applies one verified gateway event. The payment row is locked first, so concurrent
   * deliveries of the same event queue up behind each other; the credit itself carries an
   * idempotency key derived from the payment, so the ledger refuses a second credit even if
   * this logic were wrong.
   */
  async handleEvent(event: GatewayEvent): Promise<EventOutcome> {
    if (!isUuid(event.data.payment_id)) throw new DomainError('payment_not_found');
    const result = await withTransaction(this.db, async (tx) => {
      const payment = await this.find(tx, event.data.payment_id, true);
      if (!payment) throw new DomainError('payment_not_found');
      const seen = await tx.query(`SELECT 1 FROM gateway_events WHERE id = $1`, [event.id]);
      if (seen.rowCount) return { outcome: 'already_processed' as const };

      let outcome: EventOutcome;
      if (event.type === 'payment.succeeded') {
        if (payment.status === 'succeeded') {
          outcome = 'already_processed';
        } else if (event.data.amount !== payment.amount || event.data.currency !== payment.currency) {
          await tx.query(
            `UPDATE payments SET flagged = true, updated_at = now(),
                    flag_reason = $2 WHERE id = $1`,
            [payment.id, `gateway reported ${event.data.amount} ${event.data.currency} in event ${event.id}`],
          );
          return { mismatch: true as const };
        } else {
          await this.credit(tx, payment, event);
          outcome = 'credited';
          if (payment.status === 'expired') {
            // The customer's money was taken after we gave up waiting: credit it, and have a human look.
            await tx.query(`UPDATE payments SET flagged = true, flag_reason = $2 WHERE id = $1`, [payment.id, `paid after expiry (event ${event.id})`]);
            outcome = 'credited_after_expiry';
          }
        }
      } else if (payment.status === 'pending' || payment.status === 'expired') {
        await tx.query(`UPDATE payments SET status = 'failed', updated_at = now(), gateway_reference = coalesce($2, gateway_reference) WHERE id = $1`, [
          payment.id,
          event.data.gateway_reference ?? null,
        ]);
        outcome = 'marked_failed';
      } else {
        // A failure reported after success (or twice) changes nothing: the money arrived.
        outcome = 'ignored';
      }
      await tx.query(`INSERT INTO gateway_events (id, payment_id, type, outcome) VALUES ($1, $2, $3, $4)`, [
        event.id,
        payment.id,
        event.type,
        outcome,
      ]);
      return { outcome };
    });
    if ('mismatch' in result) {
      throw new DomainError('amount_mismatch', 'The amount or currency does not match the payment attempt; it is flagged for review');
    }
    return result.outcome;
  }

  /** Pending attempts past their time become expired; a late success still credits them. */
  async expire(): Promise<number> {
    const { rowCount } = await this.db.query(
      `UPDATE payments SET status = 'expired', updated_at = now()
        WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)`,
      [this.options.attemptTtlSeconds],
    );
    return rowCount ?? 0;
  }

  /**
   * Asks the gateway about attempts still waiting for a webhook (pending ones, and expired
   * ones of the last two days, those at most hourly), and settles each the way its webhook
   * would have, so that a lost webhook never loses a deposit.
   */
  async recover(gateway: GatewayClient): Promise<{ checked: number; settled: number }> {
    const { rows } = await this.db.query<{ id: string }>(
      `UPDATE payments SET gateway_checked_at = now()
        WHERE id IN (
          SELECT id FROM payments
           WHERE ((status = 'pending' AND created_at < now() - make_interval(secs => $1))
                  OR (status = 'expired' AND created_at > now() - interval '2 days'))
             AND (gateway_checked_at IS NULL
                  OR gateway_checked_at < now() - CASE status WHEN 'pending' THEN make_interval(secs => $1) ELSE interval '1 hour' END)
           ORDER BY created_at LIMIT 200
             FOR UPDATE SKIP LOCKED)
        RETURNING id`,
      [this.options.recoveryAfterSeconds],
    );
    let settled = 0;
    for (const { id } of rows) {
      const known = await gateway.status(id).catch(() => undefined);
      if (!known) continue;
      const outcome = await this.handleEvent({
        id: `recovery:${id}:${known.status}`,
        type: known.status === 'succeeded' ? 'payment.succeeded' : 'payment.failed',
        data: { payment_id: id, amount: known.amount, currency: known.currency, gateway_reference: known.reference },
      }).catch(() => 'ignored' as const);
      if (outcome === 'credited' || outcome === 'credited_after_expiry' || outcome === 'marked_failed') settled++;
    }
    return { checked: rows.length, settled };
  }

  private async credit(tx: Tx, payment: PaymentRow, event: GatewayEvent): Promise<void> {
    const [result] = await this.engine.apply(tx, [
      {
        type: 'deposit',
        legs: [
          { accountId: this.systemAccounts.id('gateway_clearing'), amount: -payment.amount },
          { accountId: payment.account_id, amount: payment.amount },
        ],
        reference: `payment:${payment.id}`,
        // The customer's money has left their bank already: a freeze must not strand it.
        ignoreFrozen: true,
        idempotency: {
          principal: 'system:gateway',
          key: `payment:${payment.id}:credit`,
          requestHash: Buffer.from(payment.id),
          render: (outcome) => ({ statusCode: 200, body: outcome.ok ? { transaction_id: outcome.transactionId } : { rejected: outcome.code } }),
        },
      },
    ]);
    if (result?.kind !== 'applied' || !result.outcome.ok) {
      throw new Error(`deposit for payment ${payment.id} was not posted: ${JSON.stringify(result)}`);
    }
    await tx.query(
      `UPDATE payments SET status = 'succeeded', transaction_id = $2, updated_at = now(),
              gateway_reference = coalesce($3, gateway_reference) WHERE id = $1`,
      [payment.id, result.outcome.transactionId, event.data.gateway_reference ?? null],
    );
  }
}
