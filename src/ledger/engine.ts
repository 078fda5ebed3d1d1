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
import type { Leg, PostedEntry, PostingCommand, PostingOutcome, PostingResult } from './types.js';

interface LockedAccount {
  id: number;
  kind: 'customer' | 'system';
  currency: string;
  balance: number;
  held: number;
  walletStatus: 'active' | 'frozen' | null;
}

/** Fails loudly: a broken invariant inside the engine must never reach the database as a commit. */
function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`ledger invariant violated: ${message}`);
}

function validateCommand(command: PostingCommand): void {
  const { legs } = command;
  assert(legs.length >= 2 && legs.length <= 16, 'a ledger transaction has 2 to 16 legs');
  let sum = 0;
  const seen = new Set<number>();
  for (const leg of legs) {
    assert(Number.isSafeInteger(leg.amount) && leg.amount !== 0, 'leg amounts are non-zero integers');
    assert(!seen.has(leg.accountId), 'each account appears once per ledger transaction');
    seen.add(leg.accountId);
    sum += leg.amount;
  }
  assert(sum === 0, 'legs sum to zero');
}

/**
 * Locks every account the batch touches, in ascending id order. Every writer of account
 * rows takes its locks in this order, which is why concurrent batches cannot deadlock.
 */
async function lockAccounts(tx: Queryable, ids: number[]): Promise<{ accounts: Map<number, LockedAccount>; now: Date }> {
  const { rows } = await tx.query<{
    id: number;
    kind: LockedAccount['kind'];
    currency: string;
    balance: number;
    held: number;
    wallet_status: LockedAccount['walletStatus'];
    now: Date;
  }>(
    `SELECT a.id, a.kind, a.currency, a.balance, a.held, w.status AS wallet_status, now() AS now
       FROM accounts a LEFT JOIN wallets w ON w.account_id = a.id
      WHERE a.id = ANY($1::bigint[])
      ORDER BY a.id
        FOR UPDATE OF a`,
    [ids],
  );
  const accounts = new Map<number, LockedAccount>();
  for (const r of rows) {
    accounts.set(r.id, { ...r, walletStatus: r.wallet_status });
  }
  assert(accounts.size === ids.length, 'every account named by a command exists');
  const now = rows[0]?.now ?? new Date();
  return { accounts, now };
}

/** Decides one command against the running balances; mutates them only when it succeeds. */
function evaluate(command: PostingCommand, accounts: Map<number, LockedAccount>, now: Date): PostingOutcome {
  const currency = accounts.get(command.legs[0]!.accountId)!.currency;
  for (const leg of command.legs) {
    const account = accounts.get(leg.accountId)!;
    if (account.currency !== currency) return { ok: false, code: 'currency_mismatch', accountId: leg.accountId };
    if (account.walletStatus === 'frozen' && !command.ignoreFrozen) {
      return { ok: false, code: 'wallet_frozen', accountId: leg.accountId };
    }
    if (leg.amount < 0 && account.kind === 'customer' && account.balance - account.held + leg.amount < 0) {
      return { ok: false, code: 'insufficient_funds', accountId: leg.accountId };
    }
  }
  const entries: PostedEntry[] = command.legs.map((leg: Leg) => {
    const account = accounts.get(leg.accountId)!;
    account.balance += leg.amount;
    return { ...leg, balanceAfter: account.balance, availableAfter: account.balance - account.held };
  });
  return { ok: true, transactionId: randomUUID(), createdAt: now, entries };
}

interface Posted {
  command: PostingCommand;
  outcome: Extract<PostingOutcome, { ok: true }>;
}

async function writePosted(tx: Queryable, posted: Posted[], accounts: Map<number, LockedAccount>): Promise<void> {
  if (posted.length === 0) return;
  await tx.query(
    `INSERT INTO ledger_transactions (id, type, note, reference)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])`,
    [
      posted.map((p) => p.outcome.transactionId),
      posted.map((p) => p.command.type),
      posted.map((p) => p.command.note ?? null),
      posted.map((p) => p.command.reference ?? null),
    ],
  );
  const entries = posted.flatMap((p) => p.outcome.entries.map((e) => ({ ...e, p })));
  await tx.query(
    `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type)
     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])`,
    [
      entries.map((e) => e.p.outcome.transactionId),
      entries.map((e) => e.accountId),
      entries.map((e) => e.amount),
      entries.map((e) => e.balanceAfter),
      entries.map((e) => e.p.command.type),
    ],
  );
  // One increment per account per batch, however many entries touch it: a hot account is
  // written once per database transaction. Balances are only ever incremented, never
  // overwritten from memory; the RETURNING check proves memory and database agree.
  const deltas = new Map<number, number>();
  for (const e of entries) deltas.set(e.accountId, (deltas.get(e.accountId) ?? 0) + e.amount);
  const ids = [...deltas.keys()].sort((a, b) => a - b);
  const { rows } = await tx.query<{ id: number; balance: number }>(
    `UPDATE accounts a SET balance = a.balance + d.delta
       FROM unnest($1::bigint[], $2::bigint[]) AS d(id, delta)
      WHERE a.id = d.id
      RETURNING a.id, a.balance`,
    [ids, ids.map((id) => deltas.get(id)!)],
  );
  assert(rows.length === ids.length, 'every touched account was updated');
  for (const r of rows) assert(r.balance === accounts.get(r.id)!.balance, `account ${r.id} balance agrees with its entries`);
}

/**
 * Applies a batch of commands inside the caller's database transaction and returns one
 * result per command, in order. Each command succeeds or fails on its own, exactly as it
 * would alone: commands are evaluated in order against running balances.
 */
export async function applyBatch(tx: Queryable, commands: PostingCommand[]): Promise<PostingResult[]> {
  commands.forEach(validateCommand);
  const claims = commands.flatMap((c) => (c.idempotency ? [c.idempotency] : []));
  const stored = await findKeys(tx, claims);
  const accountIds = [...new Set(commands.flatMap((c) => c.legs.map((l) => l.accountId)))].sort((a, b) => a - b);
  const { accounts, now } = await lockAccounts(tx, accountIds);

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
    const outcome = evaluate(command, accounts, now);
    if (outcome.ok) posted.push({ command, outcome });
    const response = claim?.render(outcome);
    if (claim && response) {
      keysToStore.push({ ...claim, ...response });
      // A second command with the same key later in this batch sees this one as its original.
      remember(stored, claim, { requestHash: claim.requestHash, ...response });
    }
    results.push({ kind: 'applied', outcome, response });
  }
  await writePosted(tx, posted, accounts);
  await storeKeys(tx, keysToStore);
  return results;
}

interface Pending {
  command: PostingCommand;
  resolve: (result: PostingResult) => void;
  reject: (error: unknown) => void;
}

export interface LedgerEngineOptions {
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
    private readonly options: LedgerEngineOptions = {},
  ) {
    this.maxBatchSize = options.maxBatchSize ?? 256;
  }

  post(command: PostingCommand): Promise<PostingResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ command, resolve, reject });
      if (!this.running) void this.drain();
    });
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
        return await withTransaction(this.db, (tx) => applyBatch(tx, commands));
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
      if (result.kind === 'applied' && result.outcome.ok) {
        const moved = result.outcome.entries.reduce((s, e) => s + (e.amount > 0 ? e.amount : 0), 0);
        metrics.ledgerMovedMinor.inc({ type }, moved);
      }
    });
  }
}
