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

export interface DriveSpec {
  /** Closed loop: clients, each sending its next request when the last is answered. */
  connections: number;
  /** Requests per second for an open-loop run; absent for closed loop. */
  rate?: number;
  durationMs: number;
  warmupMs: number;
}

/**
 * Drives `request` (which answers with a status: an HTTP code, or "200" for success
 * elsewhere) for the warm-up and the measured window, and summarizes the window. Closed
 * loop: `connections` callers back to back. Open loop (`rate`): requests are started at a
 * fixed rate whatever happens, and latency counts from the moment each was due, so a stall
 * cannot hide (no coordinated omission). A request counts when it was started (open loop:
 * due) inside the measured window, however late it is answered.
 */
export async function drive(spec: DriveSpec, request: () => Promise<string | number>): Promise<LoadResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let stopped = false;
  const measureStart = performance.now() + spec.warmupMs;
  const end = measureStart + spec.durationMs;
  const one = async (started: number) => {
    const status = await request().then(String, (error: Error) => `error:${error.name}`);
    if (started < measureStart || started >= end) return;
    latencies.push(performance.now() - started);
    statuses[status] = (statuses[status] ?? 0) + 1;
  };

  setTimeout(() => (stopped = true), spec.warmupMs + spec.durationMs);

  if (spec.rate) {
    const interval = 1000 / spec.rate;
    const inflight = new Set<Promise<void>>();
    let next = performance.now();
    while (!stopped) {
      const now = performance.now();
      while (next <= now && !stopped) {
        const p = one(next).finally(() => inflight.delete(p));
        inflight.add(p);
        next += interval;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, Math.min(2, next - performance.now()))));
    }
    await Promise.all(inflight);
  } else {
    await Promise.all(
      Array.from({ length: spec.connections }, async () => {
        while (!stopped) await one(performance.now());
      }),
    );
  }
  return summarize(latencies, statuses, Math.min(performance.now(), end) - measureStart);
}
