import type { Db, Tx } from '../db/pool.js';
import { constraintOf, isRetryable, isUnavailable, isUniqueViolation } from '../db/errors.js';
import { prepare } from '../db/script.js';
import { IDEMPOTENCY_KEY_CONSTRAINT, type IdempotencyClaim, type StoredResponse } from '../idempotency/store.js';
import type { PinPolicy } from '../auth/pin.js';
import type { Metrics } from '../metrics.js';
import { keyOf, READ, readState } from './batch-read.js';
import { evaluate, validateCommand } from './evaluate.js';
import { WRITE, writeBatch, type Posted } from './batch-write.js';
import { PIN_REJECTIONS, type PostingCommand, type PostingResult } from './types.js';

export interface BatchOptions {
  /** The time zone whose calendar day the daily limits count in. */
  timeZone: string;
  pin: PinPolicy;
  metrics?: Metrics;
}

/**
 * Every statement of a batch finds its rows by key, and is planned once per connection.
 * Two settings, sent with the read, hold for the rest of the batch's transaction:
 *
 * - Sequential scans are priced out. PostgreSQL keeps one generic plan per statement and
 *   connection; were that plan made while a table held a page or two (a young database, the
 *   first seconds after start), a scan would be its cheapest choice and would stay the plan
 *   as the table grew: every batch reading a whole table for each idempotency key.
 * - The cached generic plan is always used. For the read, PostgreSQL otherwise judged a plan
 *   for each batch's own arrays cheaper and planned it again every time: about 0.65 ms of
 *   planning against 0.05 ms, measured with EXPLAIN on a batch of four, for the same index
 *   look-ups (which is all a plan of these statements can be, with scans priced out).
 */
const PLANNING = ['SET LOCAL enable_seqscan = off', 'SET LOCAL plan_cache_mode = force_generic_plan'];

/**
 * Applies a batch of commands inside the caller's database transaction and returns one
 * result per command, in order. Each command succeeds or fails on its own, exactly as it
 * would alone: commands are evaluated in arrival order against running balances, PIN
 * counters and limits. Two statements do all the database work, whatever the batch size:
 * one reads and locks, one writes. The PLANNING settings hold for the rest of the caller's
 * transaction.
 */
export function applyBatch(tx: Tx, commands: PostingCommand[], options: BatchOptions): Promise<PostingResult[]> {
  return runInTransaction(tx, commands, options, { opening: PLANNING, closing: [] });
}

/** The statements a batch's two round trips carry besides its read and its write. */
interface Framing {
  /** Sent before the read, in its round trip. */
  opening: readonly string[];
  /** Sent after the write, in its round trip. */
  closing: readonly string[];
  /** Called once the read has returned, when the batch holds its locks. */
  locked?: () => void;
  /** Called as the write (and `closing`) is sent. */
  writing?: () => void;
}

/** Reads, evaluates and writes a batch, in two round trips that carry `framing` with them. */
async function runInTransaction(tx: Tx, commands: PostingCommand[], options: BatchOptions, framing: Framing): Promise<PostingResult[]> {
  const phase = phaseTimer(options.metrics);
  commands.forEach(validateCommand);
  await prepare(tx, LEDGER_STATEMENTS);
  const state = await readState(tx, commands, options.timeZone, framing.opening);
  framing.locked?.();
  phase('read');
  const results: PostingResult[] = [];
  const posted: Posted[] = [];
  const keys: Array<IdempotencyClaim & StoredResponse> = [];
  for (const command of commands) {
    const claim = command.idempotency;
    const previous = claim && state.keys.get(keyOf(claim.principal, claim.key));
    if (previous) {
      // A finished key is answered as it was first answered, without checking the PIN again.
      results.push(
        previous.requestHash.equals(claim.requestHash)
          ? { kind: 'replayed', response: { statusCode: previous.statusCode, body: previous.body } }
          : { kind: 'key_reused' },
      );
      continue;
    }
    const outcome = evaluate(command, state, options.pin);
    if (outcome.ok) posted.push({ command, outcome });
    const storable = outcome.ok || !PIN_REJECTIONS.has(outcome.code);
    const response = claim && storable ? claim.render(outcome) : undefined;
    if (claim && response) {
      keys.push({ ...claim, ...response });
      // A second command with the same key later in this batch sees this one as its original.
      state.keys.set(keyOf(claim.principal, claim.key), { requestHash: claim.requestHash, ...response });
    }
    results.push({ kind: 'applied', outcome, response });
  }
  phase('evaluate');
  framing.writing?.();
  await writeBatch(tx, posted, keys, state, framing.closing);
  phase('write');
  return results;
}

const LEDGER_STATEMENTS = [READ, WRITE];

/** Records how long each phase of a batch took, one after the other. */
function phaseTimer(metrics: Metrics | undefined): (name: string) => void {
  let last = process.hrtime.bigint();
  return (name) => {
    const now = process.hrtime.bigint();
    metrics?.ledgerBatchPhase.observe({ phase: name }, Number(now - last) / 1e9);
    last = now;
  };
}

/** The connection broke during COMMIT: the batch may or may not have committed, so it must not be run again. */
class CommitOutcomeUnknown extends Error {
  constructor(cause: unknown) {
    super('the connection failed during COMMIT; the batch may have committed', { cause });
  }
}

interface Pending {
  command: PostingCommand;
  resolve: (result: PostingResult) => void;
  reject: (error: unknown) => void;
}

/** A batch in flight: the accounts it locks, and a promise settled once it holds their locks. */
interface Running {
  accounts: ReadonlySet<number>;
  locked: Promise<void>;
}

/** For a batch sent behind another on the same accounts: wait for that one's locks, and signal our own. */
interface Order {
  after?: Promise<void>;
  locked?: () => void;
}

export interface LedgerEngineOptions extends BatchOptions {
  maxBatchSize?: number;
  /** Batches in flight at once: a second one is evaluated while the first waits for its commit. */
  maxConcurrentBatches?: number;
}

/** The accounts a command locks: its legs and its hold (the PIN's account is always one of them). */
function accountsOf(command: PostingCommand): number[] {
  const ids = command.legs.map((l) => l.accountId);
  if (command.hold) ids.push(command.hold.accountId);
  return ids;
}

/**
 * Group commit. Commands arriving while batches are being written wait for the next batch;
 * when the engine is idle a command goes at once, so a lone request pays no extra latency,
 * and under load many requests share one database transaction.
 *
 * Several batches run at once, on different connections, so that PostgreSQL can work on
 * one while another commits and while this process evaluates a third. A new batch takes,
 * in arrival order, the queued commands whose accounts no running batch holds, so batches
 * in flight do not wait for each other's row locks; a command that must wait holds back
 * every later command on its accounts, so each account still sees its commands in arrival
 * order. When every queued command touches a running batch's accounts (one hot account),
 * one batch is still sent behind the running one, once that one holds its locks, and waits
 * for them in the database, so the hot account's next batch is ready the moment the last
 * one commits and still comes after it. Whatever the
 * scheduling, correctness rests on the database: row locks taken in one global order, and
 * the arithmetic redone on what the locks return.
 */
export class LedgerEngine {
  private queue: Pending[] = [];
  private readonly running = new Set<Running>();
  /**
   * Set when no queued command could start for want of a running batch's accounts: those
   * accounts and every queued command's. A new command on any of them waits without the
   * queue being scanned again; the set is dropped whenever a batch finishes.
   */
  private stalledOn: Set<number> | undefined;
  private readonly maxBatchSize: number;
  private readonly maxConcurrentBatches: number;

  constructor(
    private readonly db: Db,
    private readonly options: LedgerEngineOptions,
  ) {
    this.maxBatchSize = options.maxBatchSize ?? 512;
    this.maxConcurrentBatches = options.maxConcurrentBatches ?? 2;
  }

  post(command: PostingCommand): Promise<PostingResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ command, resolve, reject });
      const ids = this.stalledOn && accountsOf(command);
      if (ids?.some((id) => this.stalledOn!.has(id))) {
        for (const id of ids) this.stalledOn!.add(id);
        return;
      }
      this.pump();
    });
  }

  /**
   * Applies commands inside a database transaction the caller already holds, for flows
   * that must lock their own rows first (a payment attempt, a withdrawal, a refund).
   */
  apply(tx: Tx, commands: PostingCommand[]): Promise<PostingResult[]> {
    return applyBatch(tx, commands, this.options);
  }

  /** Resolves once every queued command has been answered. */
  async idle(): Promise<void> {
    while (this.running.size > 0 || this.queue.length > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private pump(): void {
    while (this.queue.length > 0 && this.running.size < this.maxConcurrentBatches) {
      const { batch, behind } = this.take();
      if (batch.length === 0) return;
      let locked!: () => void;
      const entry: Running = { accounts: new Set(batch.flatMap((p) => accountsOf(p.command))), locked: new Promise((r) => (locked = r)) };
      this.running.add(entry);
      void this.runBatch(batch, { after: behind?.locked, locked }).finally(() => {
        locked();
        this.running.delete(entry);
        this.stalledOn = undefined;
        this.pump();
      });
    }
  }

  /**
   * The next batch, as described on the class, and the running batch it must follow when it
   * shares accounts with one; empty when it must wait for a running one to finish.
   */
  private take(): { batch: Pending[]; behind?: Running } {
    if (this.running.size === 0) return { batch: this.queue.splice(0, this.maxBatchSize) };
    const busy = new Set<number>();
    for (const { accounts } of this.running) for (const id of accounts) busy.add(id);
    const taken: Pending[] = [];
    const waiting: Pending[] = [];
    for (const pending of this.queue) {
      const ids = accountsOf(pending.command);
      if (taken.length < this.maxBatchSize && !ids.some((id) => busy.has(id))) {
        taken.push(pending);
      } else {
        waiting.push(pending);
        for (const id of ids) busy.add(id);
      }
    }
    if (taken.length === 0 && this.running.size === 1) return { batch: this.queue.splice(0, this.maxBatchSize), behind: [...this.running][0] };
    this.queue = waiting;
    this.stalledOn = taken.length === 0 ? busy : undefined;
    return { batch: taken };
  }

  private async runBatch(batch: Pending[], order: Order = {}): Promise<void> {
    const started = process.hrtime.bigint();
    try {
      const results = await this.commit(batch.map((p) => p.command), order);
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

  private async commit(commands: PostingCommand[], order: Order): Promise<PostingResult[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.commitOnce(commands, order);
      } catch (error) {
        // Another process stored one of our keys between our read and our write: run the
        // batch again, and this time the key is found and its answer replayed. Deadlocks,
        // serialization failures, lost connections before COMMIT and a connection that lost
        // its prepared statements roll back cleanly (db/errors.ts isRetryable).
        const keyRace = isUniqueViolation(error) && constraintOf(error) === IDEMPOTENCY_KEY_CONSTRAINT;
        const retryable = keyRace || (isRetryable(error) && !(error instanceof CommitOutcomeUnknown));
        if (!retryable || attempt >= 5) throw error;
        this.options.metrics?.ledgerBatchRetries.inc();
      }
    }
  }

  /**
   * One database transaction for one batch, in two round trips: BEGIN goes with the locking
   * read, and COMMIT with the writes. A failed write stops its script before COMMIT, and the
   * transaction is rolled back. A connection lost during the second round trip leaves the
   * outcome unknown, since COMMIT may have run.
   */
  private async commitOnce(commands: PostingCommand[], order: Order): Promise<PostingResult[]> {
    await order.after;
    const connecting = process.hrtime.bigint();
    const client = await this.db.connect();
    this.options.metrics?.ledgerBatchPhase.observe({ phase: 'connect' }, Number(process.hrtime.bigint() - connecting) / 1e9);
    let committing = false;
    let reusable = true;
    try {
      return await runInTransaction(client, commands, this.options, {
        opening: ['BEGIN', ...PLANNING],
        closing: ['COMMIT'],
        // This batch holds its locks: a batch queued behind it may go.
        locked: order.locked,
        writing: () => (committing = true),
      });
    } catch (error) {
      if (committing && isUnavailable(error)) {
        reusable = false;
        throw new CommitOutcomeUnknown(error);
      }
      if (reusable) reusable = await client.query('ROLLBACK').then(() => true, () => false);
      throw error;
    } finally {
      client.release(reusable ? undefined : true);
    }
  }

  private record(batch: Pending[], results: PostingResult[], started: bigint): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    metrics.ledgerBatchSize.observe(batch.length);
    metrics.ledgerBatchDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    results.forEach((result, i) => {
      const type = batch[i]!.command.type;
      const outcome = result.kind === 'applied' ? (result.outcome.ok ? 'posted' : result.outcome.code) : result.kind;
      metrics.ledgerCommands.inc({ type, outcome });
      if (result.kind === 'applied' && result.outcome.ok && result.outcome.transactionId) {
        const moved = result.outcome.entries.reduce((s, e) => s + (e.amount > 0 ? e.amount : 0), 0);
        metrics.ledgerMovedMinor.inc({ type }, moved);
      }
    });
  }
}
