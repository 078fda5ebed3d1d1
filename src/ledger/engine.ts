import { randomUUID } from 'node:crypto';
import type { Db, Queryable } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { constraintOf, isUniqueViolation } from '../db/errors.js';
import {
  findKeys,
  lookup,
  remember,
  storeKeys,
  IDEMPOTENCY_KEY_CONSTRAINT,
  type IdempotencyClaim,
  type StoredResponse,
} from '../idempotency/store.js';
import type { Metrics } from '../metrics.js';
import type { Leg, PostedEntry, PostedOutcome, PostingCommand, PostingOutcome, PostingResult } from './types.js';

interface LockedAccount {
  id: number;
  kind: 'customer' | 'system';
  code: string | null;
  currency: string;
  balance: number;
  held: number;
  walletStatus: 'active' | 'frozen' | null;
}

interface LockedHold {
  id: string;
  accountId: number;
  amount: number;
  status: 'pending' | 'posted' | 'released';
}

/** Everything a batch reads under its locks, and mutates as it evaluates commands in order. */
interface BatchState {
  accounts: Map<number, LockedAccount>;
  holds: Map<string, LockedHold>;
  /** Outgoing money per account for the local day, for daily limits. */
  outgoing: Map<number, number>;
  now: Date;
  today: string;
}

/** Fails loudly: a broken invariant inside the engine must never reach the database as a commit. */
function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`ledger invariant violated: ${message}`);
}

const positiveInteger = (n: number) => Number.isSafeInteger(n) && n > 0;

function validateCommand(command: PostingCommand): void {
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

/**
 * Locks every account the batch touches, in ascending id order. Every writer of account
 * rows takes its locks in this order, which is why concurrent batches cannot deadlock.
 * Holds and daily counters are only written under their account's lock, so they need no
 * lock order of their own.
 */
async function lockState(tx: Queryable, commands: PostingCommand[], timeZone: string): Promise<BatchState> {
  const ids = new Set<number>();
  for (const c of commands) {
    for (const l of c.legs) ids.add(l.accountId);
    if (c.hold) ids.add(c.hold.accountId);
  }
  const accountIds = [...ids].sort((a, b) => a - b);
  const { rows } = await tx.query<{
    id: number;
    kind: LockedAccount['kind'];
    code: string | null;
    currency: string;
    balance: number;
    held: number;
    wallet_status: LockedAccount['walletStatus'];
    now: Date;
    today: string;
  }>(
    `SELECT a.id, a.kind, a.code, a.currency, a.balance, a.held, w.status AS wallet_status,
            now() AS now, (now() AT TIME ZONE $2)::date::text AS today
       FROM accounts a LEFT JOIN wallets w ON w.account_id = a.id
      WHERE a.id = ANY($1::bigint[])
      ORDER BY a.id
        FOR UPDATE OF a`,
    [accountIds, timeZone],
  );
  const accounts = new Map<number, LockedAccount>();
  for (const r of rows) accounts.set(r.id, { ...r, walletStatus: r.wallet_status });
  assert(accounts.size === accountIds.length, 'every account named by a command exists');
  const now = rows[0]?.now ?? new Date();
  const today = rows[0]?.today ?? now.toISOString().slice(0, 10);

  const holdIds = commands.flatMap((c) => (c.hold && c.hold.action !== 'place' ? [c.hold.id] : []));
  const holds = new Map<string, LockedHold>();
  if (holdIds.length > 0) {
    const found = await tx.query<{ id: string; account_id: number; amount: number; status: LockedHold['status'] }>(
      `SELECT id, account_id, amount, status FROM holds WHERE id = ANY($1::uuid[])`,
      [holdIds],
    );
    for (const h of found.rows) holds.set(h.id, { id: h.id, accountId: h.account_id, amount: h.amount, status: h.status });
  }
  const limited = [...new Set(commands.flatMap((c) => (c.dailyLimit ? [c.dailyLimit.accountId] : [])))];
  const outgoing = new Map<number, number>();
  if (limited.length > 0) {
    const used = await tx.query<{ account_id: number; amount: number }>(
      `SELECT account_id, amount FROM daily_outgoing WHERE day = $2::date AND account_id = ANY($1::bigint[])`,
      [limited, today],
    );
    for (const u of used.rows) outgoing.set(u.account_id, u.amount);
  }
  return { accounts, holds, outgoing, now, today };
}

/** Decides one command against the running state; mutates the state only when it succeeds. */
function evaluate(command: PostingCommand, state: BatchState): PostingOutcome {
  const { accounts } = state;
  const { hold, dailyLimit } = command;
  const touched = [...command.legs.map((l) => l.accountId), ...(hold ? [hold.accountId] : [])];
  const currency = accounts.get(touched[0]!)!.currency;
  for (const id of touched) {
    const account = accounts.get(id)!;
    if (account.currency !== currency) return { ok: false, code: 'currency_mismatch', accountId: id };
    if (account.walletStatus === 'frozen' && !command.ignoreFrozen) return { ok: false, code: 'wallet_frozen', accountId: id };
  }
  // Money a posted hold stops reserving becomes spendable by this very command.
  let released = 0;
  if (hold) {
    const account = accounts.get(hold.accountId)!;
    if (hold.action === 'place') {
      if (account.balance - account.held < hold.amount) return { ok: false, code: 'insufficient_funds', accountId: hold.accountId };
    } else {
      const existing = state.holds.get(hold.id);
      assert(existing && existing.status === 'pending', `hold ${hold.id} is pending`);
      assert(existing.accountId === hold.accountId && existing.amount === hold.amount, `hold ${hold.id} matches its change`);
      released = hold.amount;
    }
  }
  if (dailyLimit && (state.outgoing.get(dailyLimit.accountId) ?? 0) + dailyLimit.amount > dailyLimit.limit) {
    return { ok: false, code: 'limit_exceeded', accountId: dailyLimit.accountId };
  }
  for (const leg of command.legs) {
    const account = accounts.get(leg.accountId)!;
    const held = account.held - (hold?.accountId === leg.accountId ? released : 0);
    if (leg.amount < 0 && mustStayNonNegative(account) && account.balance - held + leg.amount < 0) {
      return { ok: false, code: 'insufficient_funds', accountId: leg.accountId };
    }
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

interface Posted {
  command: PostingCommand;
  outcome: PostedOutcome;
}

async function writePosted(tx: Queryable, posted: Posted[], state: BatchState): Promise<void> {
  if (posted.length === 0) return;
  const moving = posted.filter((p) => p.outcome.transactionId !== null);
  if (moving.length > 0) {
    await tx.query(
      `INSERT INTO ledger_transactions (id, type, note, reference, created_at)
       SELECT id, type, note, reference, $5 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS t(id, type, note, reference)`,
      [
        moving.map((p) => p.outcome.transactionId),
        moving.map((p) => p.command.type),
        moving.map((p) => p.command.note ?? null),
        moving.map((p) => p.command.reference ?? null),
        state.now,
      ],
    );
  }
  const entries = moving.flatMap((p) => p.outcome.entries.map((e) => ({ ...e, p })));
  if (entries.length > 0) {
    await tx.query(
      `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type, created_at)
       SELECT t, a, m, b, y, $6 FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) AS e(t, a, m, b, y)`,
      [
        entries.map((e) => e.p.outcome.transactionId),
        entries.map((e) => e.accountId),
        entries.map((e) => e.amount),
        entries.map((e) => e.balanceAfter),
        entries.map((e) => e.p.command.type),
        state.now,
      ],
    );
  }
  await writeHolds(tx, posted, state);
  await writeAccounts(tx, posted, state);
  await writeDailyOutgoing(tx, posted, state);
  for (const p of posted) {
    for (const effect of p.command.effects?.(p.outcome) ?? []) await tx.query(effect.text, effect.values);
  }
}

async function writeHolds(tx: Queryable, posted: Posted[], state: BatchState): Promise<void> {
  const placed = posted.filter((p) => p.command.hold?.action === 'place');
  if (placed.length > 0) {
    await tx.query(
      `INSERT INTO holds (id, account_id, amount, type, balance_at_hold, created_at)
       SELECT id, a, m, y, b, $6 FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[]) AS h(id, a, m, y, b)`,
      [
        placed.map((p) => p.command.hold!.id),
        placed.map((p) => p.command.hold!.accountId),
        placed.map((p) => p.command.hold!.amount),
        placed.map((p) => p.command.type),
        placed.map((p) => p.outcome.hold!.balance),
        state.now,
      ],
    );
  }
  const settled = posted.filter((p) => p.command.hold && p.command.hold.action !== 'place');
  if (settled.length > 0) {
    const { rowCount } = await tx.query(
      `UPDATE holds h SET status = s.status, transaction_id = s.transaction_id, settled_at = $4
         FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS s(id, status, transaction_id)
        WHERE h.id = s.id AND h.status = 'pending'`,
      [
        settled.map((p) => p.command.hold!.id),
        settled.map((p) => (p.command.hold!.action === 'post' ? 'posted' : 'released')),
        settled.map((p) => p.outcome.transactionId),
        state.now,
      ],
    );
    assert(rowCount === settled.length, 'every settled hold was pending');
  }
}

/**
 * One increment per account per batch, however many entries touch it: a hot account is
 * written once per database transaction. Balances are only ever incremented, never
 * overwritten from memory; the RETURNING check proves memory and database agree.
 */
async function writeAccounts(tx: Queryable, posted: Posted[], state: BatchState): Promise<void> {
  const deltas = new Map<number, { balance: number; held: number }>();
  const delta = (id: number) => deltas.get(id) ?? deltas.set(id, { balance: 0, held: 0 }).get(id)!;
  for (const p of posted) {
    for (const e of p.outcome.entries) delta(e.accountId).balance += e.amount;
    const hold = p.command.hold;
    if (hold) delta(hold.accountId).held += hold.action === 'place' ? hold.amount : -hold.amount;
  }
  const ids = [...deltas.keys()].sort((a, b) => a - b);
  if (ids.length === 0) return;
  const { rows } = await tx.query<{ id: number; balance: number; held: number }>(
    `UPDATE accounts a SET balance = a.balance + d.balance, held = a.held + d.held
       FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(id, balance, held)
      WHERE a.id = d.id
      RETURNING a.id, a.balance, a.held`,
    [ids, ids.map((id) => deltas.get(id)!.balance), ids.map((id) => deltas.get(id)!.held)],
  );
  assert(rows.length === ids.length, 'every touched account was updated');
  for (const r of rows) {
    const expected = state.accounts.get(r.id)!;
    assert(r.balance === expected.balance && r.held === expected.held, `account ${r.id} agrees with its entries and holds`);
  }
}

async function writeDailyOutgoing(tx: Queryable, posted: Posted[], state: BatchState): Promise<void> {
  const counted = new Map<number, number>();
  for (const p of posted) {
    const limit = p.command.dailyLimit;
    if (limit) counted.set(limit.accountId, (counted.get(limit.accountId) ?? 0) + limit.amount);
  }
  if (counted.size === 0) return;
  const ids = [...counted.keys()];
  await tx.query(
    `INSERT INTO daily_outgoing (account_id, day, amount)
     SELECT id, $3::date, amount FROM unnest($1::bigint[], $2::bigint[]) AS d(id, amount)
     ON CONFLICT (account_id, day) DO UPDATE SET amount = daily_outgoing.amount + EXCLUDED.amount`,
    [ids, ids.map((id) => counted.get(id)!), state.today],
  );
}

export interface BatchOptions {
  /** The time zone whose calendar day the daily limits count in. */
  timeZone: string;
}

/**
 * Applies a batch of commands inside the caller's database transaction and returns one
 * result per command, in order. Each command succeeds or fails on its own, exactly as it
 * would alone: commands are evaluated in order against running balances.
 */
export async function applyBatch(tx: Queryable, commands: PostingCommand[], options: BatchOptions): Promise<PostingResult[]> {
  commands.forEach(validateCommand);
  const claims = commands.flatMap((c) => (c.idempotency ? [c.idempotency] : []));
  const stored = await findKeys(tx, claims);
  const state = await lockState(tx, commands, options.timeZone);

  const results: PostingResult[] = [];
  const posted: Posted[] = [];
  const keysToStore: Array<IdempotencyClaim & StoredResponse> = [];
  for (const command of commands) {
    const claim = command.idempotency;
    const previous = claim && lookup(stored, claim);
    if (previous) {
      results.push(
        previous.requestHash.equals(claim.requestHash)
          ? { kind: 'replayed', response: { statusCode: previous.statusCode, body: previous.body } }
          : { kind: 'key_reused' },
      );
      continue;
    }
    const outcome = evaluate(command, state);
    if (outcome.ok) posted.push({ command, outcome });
    const response = claim?.render(outcome);
    if (claim && response) {
      keysToStore.push({ ...claim, ...response });
      // A second command with the same key later in this batch sees this one as its original.
      remember(stored, claim, { requestHash: claim.requestHash, ...response });
    }
    results.push({ kind: 'applied', outcome, response });
  }
  await writePosted(tx, posted, state);
  await storeKeys(tx, keysToStore);
  return results;
}

interface Pending {
  command: PostingCommand;
  resolve: (result: PostingResult) => void;
  reject: (error: unknown) => void;
}

export interface LedgerEngineOptions extends BatchOptions {
  maxBatchSize?: number;
  metrics?: Metrics;
}

/**
 * Group commit. Commands arriving while a batch is being written wait for the next batch;
 * when the engine is idle a command goes at once, so a lone request pays no extra latency,
 * and under load many requests share one database transaction.
 */
export class LedgerEngine {
  private queue: Pending[] = [];
  private running = false;
  private readonly maxBatchSize: number;

  constructor(
    private readonly db: Db,
    private readonly options: LedgerEngineOptions,
  ) {
    this.maxBatchSize = options.maxBatchSize ?? 256;
  }

  post(command: PostingCommand): Promise<PostingResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ command, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  /**
   * Applies commands inside a database transaction the caller already holds, for flows
   * that must lock their own rows first (a payment attempt, a withdrawal, a refund).
   */
  apply(tx: Queryable, commands: PostingCommand[]): Promise<PostingResult[]> {
    return applyBatch(tx, commands, this.options);
  }

  /** Resolves once every queued command has been answered. */
  async idle(): Promise<void> {
    while (this.running || this.queue.length > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatchSize);
        await this.runBatch(batch);
      }
    } finally {
      this.running = false;
    }
  }

  private async runBatch(batch: Pending[]): Promise<void> {
    const started = process.hrtime.bigint();
    try {
      const results = await this.commit(batch.map((p) => p.command));
      batch.forEach((p, i) => p.resolve(results[i]!));
      this.record(batch, results, started);
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      // Something in the batch broke the whole database transaction in a way a retry does
      // not cure. Apply the commands one by one so that only the culprit fails.
      for (const pending of batch) await this.runBatch([pending]);
    }
  }

  private async commit(commands: PostingCommand[]): Promise<PostingResult[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await withTransaction(this.db, (tx) => applyBatch(tx, commands, this.options));
      } catch (error) {
        // Another process stored one of our keys between our look-up and our insert: run
        // the batch again, and this time the key is found and its answer replayed.
        const keyRace = isUniqueViolation(error) && constraintOf(error) === IDEMPOTENCY_KEY_CONSTRAINT;
        if (!keyRace || attempt >= 3) throw error;
        this.options.metrics?.ledgerBatchRetries.inc();
      }
    }
  }

  private record(batch: Pending[], results: PostingResult[], started: bigint): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    metrics.ledgerBatchSize.observe(batch.length);
    metrics.ledgerBatchDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    results.forEach((result, i) => {
      const type = batch[i]!.command.type;
      const outcome =
        result.kind === 'applied' ? (result.outcome.ok ? 'posted' : result.outcome.code) : result.kind;
      metrics.ledgerCommands.inc({ type, outcome });
      if (result.kind === 'applied' && result.outcome.ok && result.outcome.transactionId) {
        const moved = result.outcome.entries.reduce((s, e) => s + (e.amount > 0 ? e.amount : 0), 0);
        metrics.ledgerMovedMinor.inc({ type }, moved);
      }
    });
  }
}
