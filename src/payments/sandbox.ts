import { randomBytes } from 'node:crypto';
import { deliverSigned, type Delivery } from '../signatures.js';
import type { Db } from '../db/pool.js';
import { DomainError } from '../errors.js';
import type { GatewayEvent, PaymentService } from './service.js';

export interface SandboxOptions {
  secret: string;
  /** Where to deliver webhooks; resolved at call time because the port is known only after listen. */
  webhookUrl: () => string;
  timeoutMs: number;
}

/**
 * Plays the payment gateway in development and tests. It delivers webhooks exactly as a
 * real gateway would: signed, over HTTP, to the public webhook route, so the wallet side
 * cannot tell the difference.
 */
export class SandboxGateway {
  constructor(
    private readonly db: Db,
    private readonly payments: PaymentService,
    private readonly options: SandboxOptions,
  ) {}

  /**
   * The customer finishes (or abandons) paying at the gateway. The gateway records the
   * outcome on its side, then tells the wallet by webhook, unless told to lose it.
   */
  async complete(paymentId: string, outcome: 'succeeded' | 'failed', amount?: number, deliverWebhook = true): Promise<Delivery | { event_id: null; type: string; webhook_status: 0; webhook_response: null }> {
    const payment = await this.payments.getForGateway(paymentId);
    const reference = `sandbox_${randomBytes(8).toString('hex')}`;
    const reported = amount ?? payment.amount;
    await this.db.query(
      `INSERT INTO sandbox_gateway_payments (payment_id, status, amount, currency, reference) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status, amount = EXCLUDED.amount, updated_at = now()`,
      [payment.id, outcome, reported, payment.currency, reference],
    );
    const type = outcome === 'succeeded' ? 'payment.succeeded' : 'payment.failed';
    if (!deliverWebhook) return { event_id: null, type, webhook_status: 0, webhook_response: null };
    return this.deliver({
      id: `evt_${randomBytes(12).toString('hex')}`,
      type,
      data: { payment_id: payment.id, amount: reported, currency: payment.currency, gateway_reference: reference },
    });
  }

  /** The gateway's status API, as GatewayClient calls it. */
  async status(paymentId: string): Promise<{ status: string; amount: number; currency: string; reference: string }> {
    const { rows } = await this.db.query<{ status: string; amount: number; currency: string; reference: string }>(
      `SELECT status, amount, currency, reference FROM sandbox_gateway_payments WHERE payment_id::text = $1`,
      [paymentId],
    );
    if (!rows[0]) throw new DomainError('payment_not_found', 'The gateway has no completed payment with this id');
    return rows[0];
  }

  deliver(event: GatewayEvent): Promise<Delivery> {
    return deliverSigned(this.options.webhookUrl(), 'gateway-signature', this.options.secret, event, this.options.timeoutMs);
  }
}
