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

export type RejectionCode = 'insufficient_funds' | 'wallet_frozen' | 'currency_mismatch' | 'limit_exceeded' | 'invalid_pin' | 'pin_locked';

/**
 * A wrong or locked PIN is not an answer to the request: it is not stored under the
 * idempotency key, so the same key can be retried with the right PIN.
 */
export const PIN_REJECTIONS: ReadonlySet<RejectionCode> = new Set(['invalid_pin', 'pin_locked']);

/** A change to a hold, applied under the same account lock as the money it reserves. */
export interface HoldChange {
  id: string;
  accountId: number;
  amount: number;
  /** place: reserve; post: end the hold as the legs move the money; release: end it, nothing moves. */
  action: 'place' | 'post' | 'release';
}

/** A row that belongs with a movement, inserted in the same database transaction when the command succeeds. */
export interface Effect {
  table: 'merchant_payments' | 'audit_log';
  row: Record<string, unknown>;
}

export interface PostedOutcome {
  ok: true;
  /** Null when the command moved no money (placing or releasing a hold). */
  transactionId: string | null;
  createdAt: Date;
  entries: PostedEntry[];
  /** The balances of the hold's account after a hold change. */
  hold?: { balance: number; held: number };
}

/** What happened to one command, known only inside the batch's database transaction. */
export type PostingOutcome = PostedOutcome | { ok: false; code: RejectionCode; accountId: number };

export interface PostingCommand {
  type: TransactionType;
  legs: Leg[];
  /** Set by the caller when it must know the id before the batch commits. */
  transactionId?: string;
  note?: string | null;
  reference?: string | null;
  /** Frozen wallets neither send nor receive, unless the command must land regardless. */
  ignoreFrozen?: boolean;
  hold?: HoldChange;
  /**
   * The PIN that authorizes the command, checked in the batch, in order, with the lockout.
   * Attempts are counted on `accountId`, the wallet account the command debits or holds.
   */
  pin?: { accountId: number; salt: Buffer; hash: Buffer; value: string };
  /** Counts the debit against the account's outgoing limit for the local day. */
  dailyLimit?: { accountId: number; amount: number; limit: number };
  /**
   * When present, the key and the response rendered from the outcome are stored in the same
   * database transaction as the entries, so the money moves once per key.
   */
  idempotency?: IdempotencyClaim & { render: (outcome: PostingOutcome) => StoredResponse };
  /** Rows that belong with the movement (a payment record, a refund), written atomically with it. */
  effects?: (outcome: PostedOutcome) => Effect[];
}

export type PostingResult =
  | { kind: 'applied'; outcome: PostingOutcome; response: StoredResponse | undefined }
  /** The key was used before with the same request: here is the first answer. */
  | { kind: 'replayed'; response: StoredResponse }
  /** The key was used before with a different request. */
  | { kind: 'key_reused' };
