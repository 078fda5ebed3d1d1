/** The payment gateway's status API, asked about attempts whose webhook may have been lost. */
export interface GatewayPaymentStatus {
  status: 'succeeded' | 'failed';
  amount: number;
  currency: string;
  reference: string;
}

export class GatewayClient {
  constructor(
    private readonly baseUrl: () => string,
    private readonly timeoutMs: number,
  ) {}

  /** The gateway's view of a payment, or undefined when the customer never completed it there. */
  async status(paymentId: string): Promise<GatewayPaymentStatus | undefined> {
    const response = await fetch(`${this.baseUrl()}/payments/${encodeURIComponent(paymentId)}`, {
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    if (response.status === 404) return undefined;
    if (!response.ok) throw new Error(`gateway status query failed: ${response.status}`);
    return (await response.json()) as GatewayPaymentStatus;
  }
}
