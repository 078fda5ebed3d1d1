import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Every Prometheus metric of the service, in one registry per app instance. */
export function createMetrics() {
  const registry = new Registry();
  /** Read at scrape time; the app points them at what they observe. */
  const probes = { rateLimitRedisUp: (): boolean => false };
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    probes,
    httpRequests: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time to answer an HTTP request',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    ledgerCommands: new Counter({
      name: 'ledger_commands_total',
      help: 'Posting commands evaluated by the ledger, by transaction type and outcome',
      labelNames: ['type', 'outcome'] as const,
      registers: [registry],
    }),
    ledgerBatchSize: new Histogram({
      name: 'ledger_batch_size',
      help: 'Commands applied per database transaction (group commit)',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    ledgerBatchDuration: new Histogram({
      name: 'ledger_batch_duration_seconds',
      help: 'Time to apply and commit one batch of posting commands',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    ledgerBatchPhase: new Histogram({
      name: 'ledger_batch_phase_seconds',
      help: 'Time a batch spends in each phase: connect, read (lock), evaluate, write, commit',
      labelNames: ['phase'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5],
      registers: [registry],
    }),
    ledgerBatchRetries: new Counter({
      name: 'ledger_batch_retries_total',
      help: 'Batches retried after a conflict, deadlock or lost connection',
      registers: [registry],
    }),
    ledgerMovedMinor: new Counter({
      name: 'ledger_moved_minor_units_total',
      help: 'Money moved by posted ledger transactions, in minor units, by transaction type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    invariantViolations: new Gauge({
      name: 'ledger_invariant_violations',
      help: 'Ledger invariant violations found by the last reconciliation (0 is the only good value)',
      registers: [registry],
    }),
    reconciliationLastRun: new Gauge({
      name: 'ledger_reconciliation_last_run_timestamp_seconds',
      help: 'When the last reconciliation finished (Unix seconds)',
      registers: [registry],
    }),
    reconciliationDuration: new Gauge({
      name: 'ledger_reconciliation_duration_seconds',
      help: 'How long the last reconciliation took',
      registers: [registry],
    }),
    reconciliationFailures: new Counter({
      name: 'ledger_reconciliation_errors_total',
      help: 'Scheduled reconciliations that could not run to the end (database unavailable, ...)',
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'http_rate_limited_total',
      help: 'Requests refused with 429, by the limit that refused them',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    rateLimitFallbacks: new Counter({
      name: 'rate_limit_redis_fallbacks_total',
      help: 'Rate-limit checks counted in process memory because Redis failed to answer',
      registers: [registry],
    }),
    rateLimitRedisUp: new Gauge({
      name: 'rate_limit_redis_up',
      help: '1 when the shared Redis store for rate limits is connected (0 when absent or down)',
      registers: [registry],
      collect() {
        this.set(probes.rateLimitRedisUp() ? 1 : 0);
      },
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
