import { randomBytes } from 'node:crypto';
import { signPayload } from './signature.js';
import type { GatewayEvent, PaymentService } from './service.js';

export interface SandboxOptions {
  secret: string;
  /** Where to deliver webhooks; resolved at call time because the port is known only after listen. */
  webhookUrl: () => string;
  timeoutMs: number;
}

export interface Delivery {
  event_id: string;
  type: GatewayEvent['type'];
  webhook_status: number;
  webhook_response: unknown;
}

/**
 * Plays the payment gateway in development and tests. It delivers webhooks exactly as a
 * real gateway would: signed, over HTTP, to the public webhook route, so the wallet side
 * cannot tell the difference.
 */
export class SandboxGateway {
  constructor(
    private readonly payments: PaymentService,
    private readonly options: SandboxOptions,
  ) {}

  async complete(paymentId: string, outcome: 'succeeded' | 'failed', amount?: number): Promise<Delivery> {
    const payment = await this.payments.getForGateway(paymentId);
    const event: GatewayEvent = {
      id: `evt_${randomBytes(12).toString('hex')}`,
      type: outcome === 'succeeded' ? 'payment.succeeded' : 'payment.failed',
      data: {
        payment_id: payment.id,
        amount: amount ?? payment.amount,
        currency: payment.currency,
        gateway_reference: `sandbox_${randomBytes(8).toString('hex')}`,
      },
    };
    return this.deliver(event);
  }

  async deliver(event: GatewayEvent): Promise<Delivery> {
    const body = JSON.stringify(event);
    const response = await fetch(this.options.webhookUrl(), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'gateway-signature': signPayload(this.options.secret, body, Math.floor(Date.now() / 1000)),
      },
      body,
      signal: AbortSignal.timeout(this.options.timeoutMs),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON: keep the text as it came.
    }
    return { event_id: event.id, type: event.type, webhook_status: response.status, webhook_response: parsed };
  }
}
