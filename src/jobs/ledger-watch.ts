import type { FastifyBaseLogger } from 'fastify';
import type { Db } from '../db/pool.js';
import type { Metrics } from '../metrics.js';
import { reconcile, type Reconciliation } from '../ledger/reconcile.js';
import { Periodic } from './periodic.js';

/**
 * Reconciliation that watches: checks the ledger's invariants on a schedule (and whenever an
 * admin asks), publishes the outcome as metrics (`ledger_invariant_violations`, last-run
 * timestamp, duration) and logs a violation at error level with what was found.
 */
export class LedgerWatch {
  private readonly schedule: Periodic<Reconciliation>;

  constructor(
    private readonly db: Db,
    private readonly metrics: Metrics,
    private readonly log: FastifyBaseLogger,
  ) {
    this.schedule = new Periodic(
      () => this.run(),
      (error) => {
        this.metrics.reconciliationFailures.inc();
        this.log.warn({ err: error }, 'scheduled reconciliation could not run; the next one retries');
      },
    );
  }

  start(intervalSeconds: number): void {
    this.schedule.start(intervalSeconds * 1000);
  }

  stop(): Promise<void> {
    return this.schedule.stop();
  }

  /** One run; a run already in progress is joined rather than started twice. */
  check(): Promise<Reconciliation> {
    return this.schedule.run();
  }

  private async run(): Promise<Reconciliation> {
    const started = process.hrtime.bigint();
    const result = await reconcile(this.db);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    this.metrics.invariantViolations.set(result.violations);
    this.metrics.reconciliationLastRun.set(Date.now() / 1000);
    this.metrics.reconciliationDuration.set(seconds);
    if (result.ok) {
      this.log.debug({ checked_accounts: result.checked_accounts, duration_s: seconds }, 'reconciliation: ledger sound');
    } else {
      this.log.error(
        { violations: result.violations, mismatches: result.mismatches.slice(0, 20), total_balance: result.total_balance },
        'LEDGER INVARIANT VIOLATION: reconciliation found mismatches',
      );
    }
    return result;
  }
}
