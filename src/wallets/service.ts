import { isUuid } from '../ids.js';
import { BatchLoader } from '../batch-loader.js';
import type { Db } from '../db/pool.js';
import { DomainError } from '../errors.js';
import type { LedgerEngine } from '../ledger/engine.js';
import { itemFromOutcome, readHistory, type HistoryFilter, type HistoryItem } from '../ledger/history.js';
import { PIN_REJECTIONS, type PostingCommand, type PostingOutcome, type PostingResult, type RejectionCode } from '../ledger/types.js';
import type { Principal } from '../auth/service.js';
import { storedProblem, type IdempotencyClaim, type IdempotentResponse, type StoredResponse } from '../idempotency/store.js';
import { decodeCursor, encodeCursor } from './cursor.js';

export interface WalletView {
  id: string;
  handle: string;
  currency: string;
  balance: number;
  available_balance: number;
  held_balance: number;
  status: 'active' | 'frozen';
}

export interface Page<T> {
  data: T[];
  has_more: boolean;
  next_cursor: string | null;
}

export interface Party {
  walletId: string;
  accountId: number;
  handle: string;
  name: string | null;
  currency: string;
  role: 'customer' | 'merchant' | 'admin';
}

export interface TransferInput {
  to: string;
  amount: number;
  pin: string;
  note?: string;
}

export interface WalletOptions {
  maxTransactionAmountMinor: number;
  dailyOutgoingLimitMinor: number;
}


export function ownWallet(principal: Principal): NonNullable<Principal['wallet']> {
  if (!principal.wallet) throw new DomainError('forbidden', 'This user has no wallet');
  return principal.wallet;
}

const PARTY_CACHE_SIZE = 500_000;

export class WalletService {
  private readonly parties = new BatchLoader<string, Party>((keys) => this.loadParties(keys), { cacheSize: PARTY_CACHE_SIZE });

  constructor(
    private readonly db: Db,
    private readonly engine: LedgerEngine,
    private readonly options: WalletOptions,
  ) {}

  async view(principal: Principal): Promise<WalletView> {
    const wallet = ownWallet(principal);
    const { rows } = await this.db.query<{ currency: string; balance: number; held: number; status: WalletView['status'] }>(
      `SELECT w.currency, a.balance, a.held, w.status FROM wallets w JOIN accounts a ON a.id = w.account_id WHERE w.id = $1`,
      [wallet.id],
    );
    const r = rows[0]!;
    return {
      id: wallet.id,
      handle: wallet.handle,
      currency: r.currency,
      balance: r.balance,
      available_balance: r.balance - r.held,
      held_balance: r.held,
      status: r.status,
    };
  }

  /** The PIN of a command the caller authorizes, counted on the caller's wallet account. */
  pinFor(principal: Principal, value: string): NonNullable<PostingCommand['pin']> {
    const wallet = ownWallet(principal);
    if (!principal.pin) throw new DomainError('forbidden', 'This user has no transaction PIN');
    return { accountId: wallet.accountId, ...principal.pin, value };
  }

  /** Customer debits count against the wallet's outgoing limit for the day. */
  dailyLimit(accountId: number, amount: number): PostingCommand['dailyLimit'] {
    return { accountId, amount, limit: this.options.dailyOutgoingLimitMinor };
  }

  assertAmountAllowed(amount: number): void {
    if (amount > this.options.maxTransactionAmountMinor) {
      throw new DomainError('limit_exceeded', `The amount exceeds the per-transaction maximum of ${this.options.maxTransactionAmountMinor}`, {
        limit: this.options.maxTransactionAmountMinor,
      });
    }
  }

  /**
   * A wallet by handle (any case) or id, or 404 wallet_not_found. What it returns never
   * changes once a wallet exists (its status is not part of it: the ledger checks that under
   * its lock), so answers are cached, and concurrent look-ups share one query.
   */
  async findParty(to: string): Promise<Party> {
    const party = await this.parties.get(to.toLowerCase());
    if (!party) throw new DomainError('wallet_not_found', `No wallet has the handle or id "${to}"`);
    return party;
  }

  private async loadParties(keys: string[]): Promise<Map<string, Party>> {
    const ids = keys.filter(isUuid);
    const { rows } = await this.db.query<{ id: string; account_id: number; handle: string; name: string | null; currency: string; role: Party['role'] }>(
      `SELECT w.id, w.account_id, w.handle, coalesce(u.business_name, u.name) AS name, w.currency, u.role
         FROM wallets w JOIN users u ON u.id = w.user_id
        WHERE w.handle = ANY($1::text[]) OR w.id = ANY($2::uuid[])`,
      [keys, ids],
    );
    const found = new Map<string, Party>();
    for (const r of rows) {
      const party = { walletId: r.id, accountId: r.account_id, handle: r.handle, name: r.name, currency: r.currency, role: r.role };
      found.set(r.handle, party);
      found.set(r.id, party);
    }
    return found;
  }

  /**
   * P2P transfer. The money moves in the posting engine, where the idempotency key is
   * stored in the same database transaction as the entries.
   */
  async transfer(principal: Principal, input: TransferInput, claim: IdempotencyClaim): Promise<IdempotentResponse> {
    const sender = ownWallet(principal);
    this.assertAmountAllowed(input.amount);
    const recipient = await this.findParty(input.to);
    if (recipient.walletId === sender.id) throw new DomainError('same_wallet', 'You cannot send money to your own wallet');

    const note = input.note ?? null;
    const render = (outcome: PostingOutcome): StoredResponse => {
      if (!outcome.ok) return rejection(outcome.code);
      const transaction = itemFromOutcome(outcome, sender.accountId, {
        type: 'transfer',
        currency: recipient.currency,
        counterparty: { handle: recipient.handle, name: recipient.name },
        note,
      });
      return { statusCode: 201, body: { transaction, balance: transaction.balance_after } };
    };
    const result = await this.engine.post({
      type: 'transfer',
      legs: [
        { accountId: sender.accountId, amount: -input.amount },
        { accountId: recipient.accountId, amount: input.amount },
      ],
      note,
      reference: `wallet:${sender.id}`,
      pin: this.pinFor(principal, input.pin),
      dailyLimit: this.dailyLimit(sender.accountId, input.amount),
      idempotency: { ...claim, render },
    });
    return answerOf(result);
  }

  async history(principal: Principal, filter: Omit<HistoryFilter, 'beforeEntryId'>, cursor: string | undefined, limit: number): Promise<Page<HistoryItem>> {
    const wallet = ownWallet(principal);
    const beforeEntryId = cursor === undefined ? undefined : decodeCursor(cursor);
    const { items, entryIds, hasMore } = await readHistory(this.db, wallet.accountId, { ...filter, beforeEntryId }, limit);
    const last = entryIds[entryIds.length - 1];
    return { data: items, has_more: hasMore, next_cursor: hasMore && last !== undefined ? encodeCursor(last) : null };
  }

  /** One history item; only a party to the transaction may read it, and to anyone else it does not exist. */
  async transaction(principal: Principal, id: string): Promise<HistoryItem> {
    const wallet = ownWallet(principal);
    if (!isUuid(id)) throw new DomainError('transaction_not_found');
    const { items } = await readHistory(this.db, wallet.accountId, { transactionId: id }, 1);
    if (!items[0]) throw new DomainError('transaction_not_found');
    return items[0];
  }
}

/** A business rule refused the movement; this answer is stored under the key like a success. */
export function rejection(code: RejectionCode): StoredResponse {
  const detail = {
    insufficient_funds: 'The wallet does not have enough available money for this amount',
    wallet_frozen: 'A wallet in this transaction is frozen',
    currency_mismatch: 'The two wallets hold different currencies',
    limit_exceeded: 'This would exceed the daily outgoing limit of the wallet, or take a balance past the largest amount an account can hold',
    invalid_pin: 'The PIN is wrong; after 5 wrong PINs in a row PIN-authorized requests are locked for 15 minutes',
    pin_locked: 'Too many wrong PINs: PIN-authorized requests are locked for a while',
  }[code];
  return storedProblem(code, detail);
}

/**
 * The answer to a request whose command went through the engine alone: a replay, a
 * refusal of a reused key, or the response rendered in the batch. A PIN refusal has no
 * stored response (it is no answer to the key), so it is rendered here.
 */
export function answerOf(result: PostingResult): IdempotentResponse {
  if (result.kind === 'key_reused') throw new DomainError('idempotency_key_reused', 'This Idempotency-Key was used with a different request');
  if (result.kind === 'replayed') return { ...result.response, replayed: true };
  if (result.response) return { ...result.response, replayed: false };
  if (!result.outcome.ok) return { ...rejection(result.outcome.code), replayed: false };
  throw new Error('a posted command has no response');
}

/** Inside a caller's own transaction: a PIN refusal commits its failure count but is not kept under the key. */
export function refusal(code: RejectionCode): StoredResponse & { store?: false } {
  return PIN_REJECTIONS.has(code) ? { ...rejection(code), store: false } : rejection(code);
}
