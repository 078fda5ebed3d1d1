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

/** Whether any campaign could apply, without locking: most payments have none and skip the lock. */
export async function anyCampaignRunning(db: Queryable, merchantWalletId: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `SELECT 1 FROM cashback_campaigns
      WHERE now() >= starts_at AND now() < ends_at AND spent < budget
        AND (merchant_wallet_id IS NULL OR merchant_wallet_id = $1)
      LIMIT 1`,
    [merchantWalletId],
  );
  return (rowCount ?? 0) > 0;
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
