/** What every load driver reports: counts by status and latency percentiles, in milliseconds. */
export interface LoadResult {
  requests: number;
  ok: number;
  errors: number;
  statuses: Record<string, number>;
  durationMs: number;
  throughput: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Latencies and statuses of the measured window; throughput counts 2xx answers only. */
export function summarize(latencies: number[], statuses: Record<string, number>, durationMs: number): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  const ok = Object.entries(statuses).reduce((s, [k, v]) => (/^2\d\d$/.test(k) ? s + v : s), 0);
  return {
    requests: latencies.length,
    ok,
    errors: latencies.length - ok,
    statuses,
    durationMs: Math.round(durationMs),
    throughput: Math.round((ok / durationMs) * 1000),
    p50: +percentile(sorted, 50).toFixed(2),
    p95: +percentile(sorted, 95).toFixed(2),
    p99: +percentile(sorted, 99).toFixed(2),
    max: +percentile(sorted, 100).toFixed(2),
  };
}
