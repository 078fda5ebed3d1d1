import type { Db } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { DomainError } from '../errors.js';
import type { LedgerEngine } from '../ledger/engine.js';
import type { SystemAccounts, SystemAccountCode } from '../ledger/accounts.js';
import type { PostingOutcome } from '../ledger/types.js';
import { auditRow, writeAudit } from './audit.js';
import type { IdempotencyClaim, IdempotentResponse, StoredResponse } from '../idempotency/store.js';
import { isUuid } from '../ids.js';
import { answerOf, rejection, type WalletService } from '../wallets/service.js';
import type { CampaignIndex } from '../merchants/cashback.js';

const SYSTEM_CODES: SystemAccountCode[] = ['gateway_clearing', 'bank_payouts', 'fees', 'cashback_pool', 'adjustments'];

export interface CampaignInput {
  name: string;
  percentBps: number;
  capPerPayment: number;
  budget: number;
  startsAt: Date;
  endsAt: Date;
  merchant?: string;
}

export interface CampaignView {
  id: string;
  name: string;
  percent_bps: number;
  cap_per_payment: number;
  budget: number;
  spent: number;
  merchant_wallet_id: string | null;
  starts_at: string;
  ends_at: string;
  created_at: string;
}

/**
 * What admins may do to money: fund the cashback pool, post a correcting adjustment, run
 * cashback campaigns. Every movement is a balanced ledger transaction through the engine
 * and is written to the audit log in the same database transaction.
 */
export class FundingService {
  constructor(
    private readonly db: Db,
    private readonly engine: LedgerEngine,
    private readonly wallets: WalletService,
    private readonly systemAccounts: SystemAccounts,
    private readonly campaignIndex: CampaignIndex,
  ) {}

  /** `system:<code>` names a system account; anything else is a wallet handle or id. */
  private async account(name: string): Promise<{ id: number; label: string }> {
    if (name.startsWith('system:')) {
      const code = name.slice('system:'.length) as SystemAccountCode;
      if (!SYSTEM_CODES.includes(code)) throw new DomainError('validation_failed', `Unknown system account "${code}"; one of ${SYSTEM_CODES.join(', ')}`);
      return { id: this.systemAccounts.id(code), label: name };
    }
    const party = await this.wallets.findParty(name);
    return { id: party.accountId, label: `wallet:${party.walletId}` };
  }

  async fundCashbackPool(actorId: string, amount: number, reason: string, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    return this.move(actorId, { from: 'system:adjustments', to: 'system:cashback_pool', amount, reason }, claim, 'cashback_pool.fund');
  }

  async adjust(actorId: string, input: { from: string; to: string; amount: number; reason: string }, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    return this.move(actorId, input, claim, 'ledger.adjustment');
  }

  private async move(
    actorId: string,
    input: { from: string; to: string; amount: number; reason: string },
    claim: IdempotencyClaim,
    action: string,
  ): Promise<IdempotentResponse> {
    const from = await this.account(input.from);
    const to = await this.account(input.to);
    if (from.id === to.id) throw new DomainError('same_wallet', 'An adjustment needs two different accounts');
    const render = (outcome: PostingOutcome): StoredResponse => {
      if (!outcome.ok) return rejection(outcome.code);
      return {
        statusCode: 201,
        body: {
          transaction_id: outcome.transactionId,
          type: 'adjustment',
          from: from.label,
          to: to.label,
          amount: input.amount,
          reason: input.reason,
          created_at: outcome.createdAt.toISOString(),
        },
      };
    };
    const result = await this.engine.post({
      type: 'adjustment',
      legs: [
        { accountId: from.id, amount: -input.amount },
        { accountId: to.id, amount: input.amount },
      ],
      note: input.reason,
      reference: `admin:${actorId}`,
      // A correction must be possible on a frozen wallet too: that is often why it is frozen.
      ignoreFrozen: true,
      effects: (outcome) => [
        auditRow(actorId, action, `transaction:${outcome.transactionId}`, { from: from.label, to: to.label, amount: input.amount, reason: input.reason }),
      ],
      idempotency: { ...claim, render },
    });
    return answerOf(result);
  }

  async createCampaign(actorId: string, input: CampaignInput): Promise<CampaignView> {
    if (input.endsAt <= input.startsAt) throw new DomainError('validation_failed', 'ends_at must be after starts_at');
    let merchantWalletId: string | null = null;
    if (input.merchant) {
      const party = await this.wallets.findParty(input.merchant).catch(() => undefined);
      if (!party || party.role !== 'merchant') throw new DomainError('merchant_not_found', `No merchant has the handle or id "${input.merchant}"`);
      merchantWalletId = party.walletId;
    }
    const id = await withTransaction(this.db, async (tx) => {
      const { rows } = await tx.query<{ id: string }>(
        `INSERT INTO cashback_campaigns (name, percent_bps, cap_per_payment, budget, merchant_wallet_id, starts_at, ends_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
        [input.name, input.percentBps, input.capPerPayment, input.budget, merchantWalletId, input.startsAt, input.endsAt, actorId],
      );
      const created = rows[0]!.id;
      await writeAudit(tx, auditRow(actorId, 'cashback_campaign.create', `campaign:${created}`, { name: input.name, budget: input.budget, percent_bps: input.percentBps }));
      return created;
    });
    this.campaignIndex.invalidate();
    return this.campaign(id);
  }

  async campaigns(id?: string): Promise<CampaignView[]> {
    const { rows } = await this.db.query<Omit<CampaignView, 'starts_at' | 'ends_at' | 'created_at'> & { starts_at: Date; ends_at: Date; created_at: Date }>(`SELECT id, name, percent_bps, cap_per_payment, budget, spent, merchant_wallet_id, starts_at, ends_at, created_at
          FROM cashback_campaigns WHERE $1::uuid IS NULL OR id = $1 ORDER BY created_at DESC LIMIT 100`, [id ?? null]);
    return rows.map((r) => ({
      ...r,
      starts_at: r.starts_at.toISOString(),
      ends_at: r.ends_at.toISOString(),
      created_at: r.created_at.toISOString(),
    }));
  }

  async campaign(id: string): Promise<CampaignView> {
    const found = isUuid(id) ? (await this.campaigns(id))[0] : undefined;
    if (!found) throw new DomainError('campaign_not_found');
    return found;
  }
}
