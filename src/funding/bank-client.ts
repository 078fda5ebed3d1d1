/**
 * The bank's payout API as this service uses it. Every payout carries our withdrawal id as
 * its reference, which the bank treats as an idempotency key; every call has a timeout.
 */
export type PayoutStatus = 'processing' | 'succeeded' | 'failed' | 'cancelled';

export interface PayoutRequest {
  reference: string;
  amount: number;
  currency: string;
  accountNumber: string;
  ifsc: string;
}

export class BankError extends Error {}

export class BankClient {
  constructor(
    private readonly baseUrl: () => string,
    private readonly timeoutMs: number,
  ) {}

  private async call(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl()}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new BankError(`bank unreachable: ${(error as Error).message}`);
    }
    const json = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (response.status >= 500) throw new BankError(`bank answered ${response.status}`);
    return { status: response.status, json };
  }

  async submit(payout: PayoutRequest): Promise<PayoutStatus> {
    const { status, json } = await this.call('POST', '/payouts', {
      reference: payout.reference,
      amount: payout.amount,
      currency: payout.currency,
      account_number: payout.accountNumber,
      ifsc: payout.ifsc,
    });
    if (status !== 200 && status !== 201 && status !== 202) throw new BankError(`bank refused the payout request: ${status}`);
    return json.status as PayoutStatus;
  }

  /** The bank's view of a payout, or undefined when it never received it. */
  async status(reference: string): Promise<PayoutStatus | undefined> {
    const { status, json } = await this.call('GET', `/payouts/${encodeURIComponent(reference)}`);
    if (status === 404) return undefined;
    if (status !== 200) throw new BankError(`bank status query failed: ${status}`);
    return json.status as PayoutStatus;
  }

  /** Asks the bank to cancel; answers the payout's status afterwards (cancelled unless it settled first). */
  async cancel(reference: string): Promise<PayoutStatus | undefined> {
    const { status, json } = await this.call('POST', `/payouts/${encodeURIComponent(reference)}/cancel`);
    if (status === 404) return undefined;
    if (status !== 200 && status !== 409) throw new BankError(`bank cancel failed: ${status}`);
    return json.status as PayoutStatus;
  }
}
