import { randomUUID } from 'node:crypto';
import type { Db, Tx } from '../db/pool.js';
import { DomainError } from '../errors.js';
import type { LedgerEngine } from '../ledger/engine.js';
import type { SystemAccounts } from '../ledger/accounts.js';
import { itemFromOutcome } from '../ledger/history.js';
import type { Effect, PostedOutcome, PostingCommand, PostingOutcome } from '../ledger/types.js';
import type { Principal } from '../auth/service.js';
import { storedProblem, type IdempotencyClaim, type IdempotentResponse, type StoredResponse } from '../idempotency/store.js';
import { runIdempotent } from '../idempotency/run.js';
import { isUuid } from '../ids.js';
import { answerOf, ownWallet, refusal, rejection, type Party, type WalletService } from '../wallets/service.js';
import { cashbackFor, cashbackToReverse, lockBestCampaign, type Campaign, type CampaignIndex } from './cashback.js';

export interface PayInput {
  merchant: string;
  amount: number;
  pin: string;
  orderId?: string;
}

export interface MerchantOptions {
  feeBps: number;
}

/** The record of a payment to a merchant, which refunds lock and count against. */
const paymentRecord = (
  outcome: PostedOutcome,
  customer: string,
  merchant: string,
  input: PayInput,
  fee: number,
  cashback?: { campaignId: string; amount: number; transactionId: string },
): Effect => ({
  table: 'merchant_payments',
  row: {
    transaction_id: outcome.transactionId,
    customer_wallet_id: customer,
    merchant_wallet_id: merchant,
    amount: input.amount,
    fee,
    order_id: input.orderId ?? null,
    campaign_id: cashback?.campaignId ?? null,
    cashback: cashback?.amount ?? 0,
    cashback_transaction_id: cashback?.transactionId ?? null,
  },
});

interface PaymentRecord {
  transaction_id: string;
  customer_wallet_id: string;
  customer_account_id: number;
  customer_handle: string;
  customer_name: string | null;
  merchant_account_id: number;
  amount: number;
  refunded: number;
  cashback: number;
  cashback_reversed: number;
  currency: string;
}

export class MerchantService {
  constructor(
    private readonly db: Db,
    private readonly engine: LedgerEngine,
    private readonly wallets: WalletService,
    private readonly systemAccounts: SystemAccounts,
    private readonly campaigns: CampaignIndex,
    private readonly options: MerchantOptions,
  ) {}

  private async findMerchant(handleOrId: string): Promise<Party> {
    const party = await this.wallets.findParty(handleOrId).catch((error: unknown) => {
      if (error instanceof DomainError && error.code === 'wallet_not_found') throw new DomainError('merchant_not_found', `No merchant has the handle or id "${handleOrId}"`);
      throw error;
    });
    if (party.role !== 'merchant') throw new DomainError('merchant_not_found', `${party.handle} is not a merchant`);
    return party;
  }

  /**
   * Pays a merchant: the customer's debit, the merchant's credit net of the fee, and the fee,
   * in one ledger transaction. When a cashback campaign runs, its budget row is locked and
   * the cashback is a second ledger transaction in the same database transaction, so the
   * budget can never be overspent and cashback never exists without its payment.
   */
  async pay(principal: Principal, input: PayInput, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    const customer = ownWallet(principal);
    this.wallets.assertAmountAllowed(input.amount);
    const merchant = await this.findMerchant(input.merchant);
    if (merchant.walletId === customer.id) throw new DomainError('same_wallet', 'A merchant cannot pay itself');

    const fee = Math.floor((input.amount * this.options.feeBps) / 10_000);
    const legs = [
      { accountId: customer.accountId, amount: -input.amount },
      { accountId: merchant.accountId, amount: input.amount - fee },
      ...(fee > 0 ? [{ accountId: this.systemAccounts.id('fees'), amount: fee }] : []),
    ];
    const payment: PostingCommand = {
      type: 'payment',
      legs,
      note: input.orderId ? `order ${input.orderId}` : null,
      reference: `merchant:${merchant.walletId}`,
      pin: this.wallets.pinFor(principal, input.pin),
      dailyLimit: this.wallets.dailyLimit(customer.accountId, input.amount),
    };
    const respond = (outcome: PostingOutcome, cashback?: { outcome: PostedOutcome; amount: number; campaignId: string }): StoredResponse & { store?: false } => {
      if (!outcome.ok) return refusal(outcome.code);
      const transaction = itemFromOutcome(outcome, customer.accountId, {
        type: 'payment',
        currency: merchant.currency,
        counterparty: { handle: merchant.handle, name: merchant.name },
        note: payment.note,
      });
      const balance = cashback ? cashback.outcome.entries.find((e) => e.accountId === customer.accountId)!.balanceAfter : transaction.balance_after;
      return {
        statusCode: 201,
        body: {
          transaction,
          balance,
          ...(cashback ? { cashback: { amount: cashback.amount, campaign_id: cashback.campaignId, transaction_id: cashback.outcome.transactionId } } : {}),
        },
      };
    };

    if (!(await this.campaigns.anyRunning(merchant.walletId))) {
      const result = await this.engine.post({
        ...payment,
        effects: (outcome) => [paymentRecord(outcome, customer.id, merchant.walletId, input, fee)],
        idempotency: { ...claim, render: (outcome) => respond(outcome) },
      });
      return answerOf(result);
    }
    return runIdempotent(this.db, claim, async (tx) => {
      const campaign = await lockBestCampaign(tx, merchant.walletId);
      const [paid] = await this.engine.apply(tx, [payment]);
      const outcome = (paid as { outcome: PostingOutcome }).outcome;
      if (!outcome.ok) return respond(outcome);
      const cashback = campaign && (await this.grantCashback(tx, campaign, customer.accountId, input.amount, outcome));
      const record = paymentRecord(outcome, customer.id, merchant.walletId, input, fee, cashback && { campaignId: campaign!.id, amount: cashback.amount, transactionId: cashback.outcome.transactionId! });
      const columns = Object.keys(record.row);
      await tx.query(
        `INSERT INTO merchant_payments (${columns.join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`,
        Object.values(record.row),
      );
      return respond(outcome, cashback && { ...cashback, campaignId: campaign!.id });
    });
  }

  private async grantCashback(tx: Tx, campaign: Campaign, customerAccountId: number, amount: number, payment: PostedOutcome) {
    const cashback = cashbackFor(campaign, amount);
    if (cashback <= 0) return undefined;
    const [granted] = await this.engine.apply(tx, [
      {
        type: 'cashback',
        legs: [
          { accountId: this.systemAccounts.id('cashback_pool'), amount: -cashback },
          { accountId: customerAccountId, amount: cashback },
        ],
        note: 'cashback',
        reference: `payment:${payment.transactionId}`,
      },
    ]);
    const outcome = (granted as { outcome: PostingOutcome }).outcome;
    // An empty pool (or a frozen wallet) means no cashback; the payment itself stands.
    if (!outcome.ok) return undefined;
    await tx.query(`UPDATE cashback_campaigns SET spent = spent + $2 WHERE id = $1`, [campaign.id, cashback]);
    return { outcome, amount: cashback };
  }

  /**
   * Refunds all or part of a payment. The payment's record is locked first, so refunds of
   * one payment are serialised and together never exceed it. Cashback is taken back in
   * proportion, out of the refund, so the customer's balance can never go negative for it.
   */
  async refund(principal: Principal, paymentId: string, input: { amount?: number; reason?: string }, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    const merchantWallet = ownWallet(principal);
    if (principal.role !== 'merchant') throw new DomainError('forbidden', 'Only merchants refund payments');
    if (!isUuid(paymentId)) throw new DomainError('payment_not_found');
    if (input.amount !== undefined) this.wallets.assertAmountAllowed(input.amount);
    return runIdempotent(this.db, claim, async (tx) => {
      const { rows } = await tx.query<PaymentRecord>(
        `SELECT p.transaction_id, p.customer_wallet_id, c.account_id AS customer_account_id, c.handle AS customer_handle,
                coalesce(u.business_name, u.name) AS customer_name, m.account_id AS merchant_account_id,
                p.amount, p.refunded, p.cashback, p.cashback_reversed, m.currency
           FROM merchant_payments p
           JOIN wallets c ON c.id = p.customer_wallet_id JOIN users u ON u.id = c.user_id
           JOIN wallets m ON m.id = p.merchant_wallet_id
          WHERE p.transaction_id = $1 AND p.merchant_wallet_id = $2
            FOR UPDATE OF p`,
        [paymentId, merchantWallet.id],
      );
      const payment = rows[0];
      // Another merchant's payment does not exist, as far as this merchant can tell.
      if (!payment) throw new DomainError('payment_not_found', 'No payment to you has this transaction id');
      const refundable = payment.amount - payment.refunded;
      const amount = input.amount ?? refundable;
      if (amount <= 0 || amount > refundable) {
        // Kept under the key: a retry answers exactly this again, even after other refunds
        // have changed what is left.
        return storedProblem('refund_exceeds_payment', `At most ${refundable} of this payment can still be refunded`, { refundable });
      }
      const reversal = cashbackToReverse(
        { amount: payment.amount, cashback: payment.cashback, cashbackReversed: payment.cashback_reversed },
        payment.refunded + amount,
      );
      const toCustomer = amount - reversal;
      const [result] = await this.engine.apply(tx, [
        {
          type: 'refund',
          legs: [
            { accountId: payment.merchant_account_id, amount: -amount },
            ...(toCustomer > 0 ? [{ accountId: payment.customer_account_id, amount: toCustomer }] : []),
            ...(reversal > 0 ? [{ accountId: this.systemAccounts.id('cashback_pool'), amount: reversal }] : []),
          ],
          transactionId: randomUUID(),
          note: input.reason ?? null,
          reference: `payment:${payment.transaction_id}`,
        },
      ]);
      const outcome = (result as { outcome: PostingOutcome }).outcome;
      if (!outcome.ok) return rejection(outcome.code);
      await tx.query(
        `UPDATE merchant_payments SET refunded = refunded + $2, cashback_reversed = cashback_reversed + $3 WHERE transaction_id = $1`,
        [payment.transaction_id, amount, reversal],
      );
      await tx.query(
        `INSERT INTO refunds (transaction_id, payment_transaction_id, amount, cashback_reversed, reason) VALUES ($1, $2, $3, $4, $5)`,
        [outcome.transactionId, payment.transaction_id, amount, reversal, input.reason ?? null],
      );
      const transaction = itemFromOutcome(outcome, payment.merchant_account_id, {
        type: 'refund',
        currency: payment.currency,
        counterparty: { handle: payment.customer_handle, name: payment.customer_name },
        note: input.reason ?? null,
      });
      return {
        statusCode: 201,
        body: {
          refund: {
            id: outcome.transactionId,
            payment_transaction_id: payment.transaction_id,
            amount,
            cashback_reversed: reversal,
            reason: input.reason ?? null,
            created_at: outcome.createdAt.toISOString(),
          },
          transaction,
          balance: transaction.balance_after,
          payment: { amount: payment.amount, refunded: payment.refunded + amount, refundable: refundable - amount },
        },
      };
    });
  }
}
