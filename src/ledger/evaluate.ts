import { randomUUID, timingSafeEqual } from 'node:crypto';
import { hashPin, type PinPolicy } from '../auth/pin.js';
import type { BatchState, LockedAccount } from './batch-read.js';
import type { Leg, PostedEntry, PostingCommand, PostingOutcome, RejectionCode } from './types.js';

/** Fails loudly: a broken invariant inside the engine must never reach the database as a commit. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`ledger invariant violated: ${message}`);
}

const positiveInteger = (n: number) => Number.isSafeInteger(n) && n > 0;

/** Programming errors in a command: they fail the command loudly, never the money. */
export function validateCommand(command: PostingCommand): void {
  const { legs, hold, dailyLimit } = command;
  if (hold?.action === 'place' || hold?.action === 'release') {
    assert(legs.length === 0, 'placing or releasing a hold moves no money');
  } else {
    assert(legs.length >= 2 && legs.length <= 16, 'a ledger transaction has 2 to 16 legs');
  }
  let sum = 0;
  const seen = new Set<number>();
  for (const leg of legs) {
    assert(Number.isSafeInteger(leg.amount) && leg.amount !== 0, 'leg amounts are non-zero integers');
    assert(!seen.has(leg.accountId), 'each account appears once per ledger transaction');
    seen.add(leg.accountId);
    sum += leg.amount;
  }
  assert(sum === 0, 'legs sum to zero');
  if (hold) {
    assert(positiveInteger(hold.amount), 'a hold is a positive integer amount');
    if (hold.action === 'post') {
      const debit = legs.find((l) => l.accountId === hold.accountId);
      assert(debit?.amount === -hold.amount, 'posting a hold debits its account by the held amount');
    }
  }
  if (dailyLimit) assert(positiveInteger(dailyLimit.amount) && positiveInteger(dailyLimit.limit), 'a daily limit counts a positive amount');
}

/** Accounts that may never go below zero: every wallet, and the cashback pool. */
function mustStayNonNegative(account: LockedAccount): boolean {
  return account.kind === 'customer' || account.code === 'cashback_pool';
}

const reject = (code: RejectionCode, accountId: number): PostingOutcome => ({ ok: false, code, accountId });

/**
 * The PIN check with its lockout, applied to the batch's running state so that commands
 * of one user in one batch see each other's failures in arrival order. A wrong PIN counts
 * a failure; the one that reaches the limit sets the lock; a right PIN clears the count.
 */
function checkPin(command: PostingCommand, state: BatchState, policy: PinPolicy): RejectionCode | undefined {
  const pin = command.pin;
  if (!pin) return undefined;
  const account = state.accounts.get(pin.accountId);
  assert(account, `PIN account ${pin.accountId} is locked by the batch`);
  const user = account.pin;
  if (user.locked) return 'pin_locked';
  if (timingSafeEqual(hashPin(policy.pepper, pin.salt, pin.value), pin.hash)) {
    if (user.failures !== 0 || user.hadLock) {
      user.failures = 0;
      user.hadLock = false;
      user.lockedUntil = null;
      user.dirty = true;
    }
    return undefined;
  }
  // A lock that has expired starts a new count.
  user.failures = user.hadLock ? 1 : user.failures + 1;
  user.hadLock = false;
  user.lockedUntil = null;
  if (user.failures >= policy.maxFailures) {
    user.locked = true;
    user.hadLock = true;
    user.lockedUntil = new Date(state.now.getTime() + policy.lockSeconds * 1000);
  }
  user.dirty = true;
  return 'invalid_pin';
}

/** Decides one command against the running state; mutates the state only when it succeeds (PIN failures always count). */
export function evaluate(command: PostingCommand, state: BatchState, policy: PinPolicy): PostingOutcome {
  const { accounts } = state;
  const { hold, dailyLimit } = command;
  const touched = [...command.legs.map((l) => l.accountId), ...(hold ? [hold.accountId] : [])];
  for (const id of touched) assert(accounts.has(id), `account ${id} exists`);
  assert(!command.pin || touched.includes(command.pin.accountId), 'the PIN is counted on an account the command touches');
  const pinRefusal = checkPin(command, state, policy);
  if (pinRefusal) return reject(pinRefusal, touched[0]!);

  const currency = accounts.get(touched[0]!)!.currency;
  for (const id of touched) {
    const account = accounts.get(id)!;
    if (account.currency !== currency) return reject('currency_mismatch', id);
    if (account.walletStatus === 'frozen' && !command.ignoreFrozen) return reject('wallet_frozen', id);
  }
  // Money a posted hold stops reserving becomes spendable by this very command.
  let released = 0;
  if (hold) {
    const account = accounts.get(hold.accountId)!;
    if (hold.action === 'place') {
      if (account.balance - account.held < hold.amount) return reject('insufficient_funds', hold.accountId);
    } else {
      const existing = state.holds.get(hold.id);
      assert(existing && existing.status === 'pending', `hold ${hold.id} is pending`);
      assert(existing.accountId === hold.accountId && existing.amount === hold.amount, `hold ${hold.id} matches its change`);
      released = hold.amount;
    }
  }
  if (dailyLimit && (state.outgoing.get(dailyLimit.accountId) ?? 0) + dailyLimit.amount > dailyLimit.limit) {
    return reject('limit_exceeded', dailyLimit.accountId);
  }
  for (const leg of command.legs) {
    const account = accounts.get(leg.accountId)!;
    const held = account.held - (hold?.accountId === leg.accountId ? released : 0);
    if (leg.amount < 0 && mustStayNonNegative(account) && account.balance - held + leg.amount < 0) {
      return reject('insufficient_funds', leg.accountId);
    }
    // Balances are added here in JavaScript numbers: past 2^53 - 1 (either way) they would no
    // longer be exact, so no account's balance may go there.
    if (!Number.isSafeInteger(account.balance + leg.amount)) return reject('limit_exceeded', leg.accountId);
  }

  if (hold) {
    const account = accounts.get(hold.accountId)!;
    account.held += hold.action === 'place' ? hold.amount : -hold.amount;
    if (hold.action !== 'place') state.holds.get(hold.id)!.status = hold.action === 'post' ? 'posted' : 'released';
  }
  if (dailyLimit) state.outgoing.set(dailyLimit.accountId, (state.outgoing.get(dailyLimit.accountId) ?? 0) + dailyLimit.amount);
  const entries: PostedEntry[] = command.legs.map((leg: Leg) => {
    const account = accounts.get(leg.accountId)!;
    account.balance += leg.amount;
    return { ...leg, balanceAfter: account.balance, availableAfter: account.balance - account.held };
  });
  const holdAccount = hold && accounts.get(hold.accountId)!;
  return {
    ok: true,
    transactionId: command.legs.length > 0 ? (command.transactionId ?? randomUUID()) : null,
    createdAt: state.now,
    entries,
    ...(holdAccount ? { hold: { balance: holdAccount.balance, held: holdAccount.held } } : {}),
  };
}
