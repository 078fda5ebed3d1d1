import type { Queryable } from '../db/pool.js';

export interface Campaign {
  id: string;
  percentBps: number;
  capPerPayment: number;
  remaining: number;
}

/**
 * The best running campaign for a payment to this merchant, locked so that no two
 * payments can spend the same budget. Called inside the payment's database transaction.
 */
export async function lockBestCampaign(tx: Queryable, merchantWalletId: string): Promise<Campaign | undefined> {
  const { rows } = await tx.query<{ id: string; percent_bps: number; cap_per_payment: number; remaining: number }>(
    `SELECT id, percent_bps, cap_per_payment, budget - spent AS remaining
       FROM cashback_campaigns
      WHERE now() >= starts_at AND now() < ends_at AND spent < budget
        AND (merchant_wallet_id IS NULL OR merchant_wallet_id = $1)
      ORDER BY percent_bps DESC, created_at
      LIMIT 1
        FOR UPDATE`,
    [merchantWalletId],
  );
  const r = rows[0];
  return r && { id: r.id, percentBps: r.percent_bps, capPerPayment: r.cap_per_payment, remaining: r.remaining };
}

/**
 * Which merchants a running campaign may apply to, re-read at most once a second (and at
 * once after a campaign is created here), so that most payments — those no campaign
 * covers — skip the campaign lock without a query. A campaign that starts, or another
 * process creates, is seen within a second; the budget itself is only ever spent under
 * the lock, so staleness can cost a second of cashback, never money.
 */
export class CampaignIndex {
  private loadedAt = 0;
  private all = false;
  private merchants = new Set<string>();
  private loading: Promise<void> | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly maxAgeMs = 1_000,
  ) {}

  invalidate(): void {
    this.loadedAt = 0;
  }

  async anyRunning(merchantWalletId: string): Promise<boolean> {
    if (Date.now() - this.loadedAt > this.maxAgeMs) {
      this.loading ??= this.load().finally(() => (this.loading = undefined));
      await this.loading;
    }
    return this.all || this.merchants.has(merchantWalletId);
  }

  private async load(): Promise<void> {
    const { rows } = await this.db.query<{ merchant_wallet_id: string | null }>(
      `SELECT DISTINCT merchant_wallet_id FROM cashback_campaigns
        WHERE now() >= starts_at - interval '2 seconds' AND now() < ends_at AND spent < budget`,
    );
    this.all = rows.some((r) => r.merchant_wallet_id === null);
    this.merchants = new Set(rows.flatMap((r) => (r.merchant_wallet_id ? [r.merchant_wallet_id] : [])));
    this.loadedAt = Date.now();
  }
}

/** Percent of the amount, rounded down, capped per payment and by what is left of the budget. */
export function cashbackFor(campaign: Campaign, amount: number): number {
  return Math.min(Math.floor((amount * campaign.percentBps) / 10_000), campaign.capPerPayment, campaign.remaining);
}

/**
 * The part of a payment's cashback that refunds so far take back, in proportion to what
 * has been refunded, rounded down until the last refund takes back the rest. Computed on
 * cumulative totals so that rounding never takes back more than was given.
 */
export function cashbackToReverse(payment: { amount: number; cashback: number; cashbackReversed: number }, refundedAfter: number): number {
  const target = refundedAfter >= payment.amount ? payment.cashback : Math.floor((payment.cashback * refundedAfter) / payment.amount);
  return Math.max(0, target - payment.cashbackReversed);
}
