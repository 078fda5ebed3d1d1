import type { IdempotencyClaim, StoredResponse } from '../idempotency/store.js';

export const TRANSACTION_TYPES = [
  'deposit',
  'transfer',
  'payment',
  'refund',
  'cashback',
  'withdrawal',
  'withdrawal_reversal',
  'adjustment',
] as const;
export type TransactionType = (typeof TRANSACTION_TYPES)[number];

/** One side of a movement: debit negative, credit positive, integer minor units. */
export interface Leg {
  accountId: number;
  amount: number;
}

export interface PostedEntry extends Leg {
  balanceAfter: number;
  /** Spendable money right after this entry: balance_after minus held. */
  availableAfter: number;
}

export type RejectionCode = 'insufficient_funds' | 'wallet_frozen' | 'currency_mismatch';

/** What happened to one command, known only inside the batch's database transaction. */
export type PostingOutcome =
  | { ok: true; transactionId: string; createdAt: Date; entries: PostedEntry[] }
  | { ok: false; code: RejectionCode; accountId: number };

export interface PostingCommand {
  type: TransactionType;
  legs: Leg[];
  note?: string | null;
  reference?: string | null;
  /** Frozen wallets neither send nor receive, unless the command must land regardless. */
  ignoreFrozen?: boolean;
  /**
   * When present, the key and the response rendered from the outcome are stored in the same
   * database transaction as the entries, so the money moves once per key.
   */
  idempotency?: IdempotencyClaim & { render: (outcome: PostingOutcome) => StoredResponse };
}

export type PostingResult =
  | { kind: 'applied'; outcome: PostingOutcome; response: StoredResponse | undefined }
  /** The key was used before with the same request: here is the first answer. */
  | { kind: 'replayed'; response: StoredResponse }
  /** The key was used before with a different request. */
  | { kind: 'key_reused' };
