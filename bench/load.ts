/**
 * The load generator, run as its own process so that it does not share an event loop with
 * the service. Closed loop: `connections` clients each send the next request when the last
 * answer arrives. Open loop (`rate`): requests are sent at a fixed rate whatever happens,
 * and latency counts from the moment each was due, so a stall cannot hide (no coordinated
 * omission). Prints one JSON line with counts and latency percentiles.
 */
import { readFileSync } from 'node:fs';
import { HttpPool } from './http-client.js';
import { summarize } from './stats.js';

export interface LoadSpec {
  url: string;
  kind: 'transfer' | 'pay' | 'history';
  connections: number;
  durationMs: number;
  warmupMs: number;
  /** Requests per second for an open-loop run; absent for closed loop. */
  rate?: number;
  /** File with the actors: tokens, handles, pin. */
  actorsFile: string;
  /** For pay: the merchant (or hot wallet) handle; for history: cursors to page from. */
  target?: string;
  cursors?: string[];
  pathPrefix?: string;
}

interface Actors {
  tokens: string[];
  handles: string[];
  pin: string;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as LoadSpec;
  const actors = JSON.parse(readFileSync(spec.actorsFile, 'utf8')) as Actors;
  const pool = new HttpPool(spec.url, spec.connections);
  const n = actors.tokens.length;
  let counter = 0;
  const prefix = `${process.pid}-${Date.now()}`;

  const request = () => {
    const i = Math.floor(Math.random() * n);
    const token = actors.tokens[i]!;
    if (spec.kind === 'history') {
      const cursor = spec.cursors && spec.cursors.length > 0 && Math.random() < 0.5 ? spec.cursors[Math.floor(Math.random() * spec.cursors.length)] : undefined;
      return pool.request({
        method: 'GET',
        path: `/wallet/transactions?limit=20${cursor ? `&cursor=${cursor}` : ''}`,
        headers: { authorization: `Bearer ${token}` },
      });
    }
    let to: string;
    if (spec.target) {
      to = spec.target;
    } else {
      let j = Math.floor(Math.random() * (n - 1));
      if (j >= i) j++;
      to = actors.handles[j]!;
    }
    const body = spec.kind === 'pay' ? { merchant: to, amount: 1, pin: actors.pin } : { to, amount: 1, pin: actors.pin };
    return pool.request({
      method: 'POST',
      path: spec.kind === 'pay' ? `${spec.pathPrefix ?? ''}/wallet/pay` : `${spec.pathPrefix ?? ''}/wallet/transfer`,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `${prefix}-${counter++}` },
      body: JSON.stringify(body),
    });
  };

  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let stopped = false;
  const begin = performance.now();
  const measureStart = begin + spec.warmupMs;
  const end = measureStart + spec.durationMs;
  // A request counts when it was sent (open loop: due) inside the measured window, however
  // late it is answered; one sent during the warm-up does not, however late it is answered.
  const record = (started: number, status: string) => {
    if (started < measureStart || started >= end) return;
    latencies.push(performance.now() - started);
    statuses[status] = (statuses[status] ?? 0) + 1;
  };
  const one = async (started: number) => {
    try {
      record(started, String(await request()));
    } catch (error) {
      record(started, `error:${(error as Error).name}`);
    }
  };

  setTimeout(() => (stopped = true), spec.warmupMs + spec.durationMs);

  if (spec.rate) {
    const interval = 1000 / spec.rate;
    const inflight = new Set<Promise<void>>();
    let next = performance.now();
    while (!stopped) {
      const now = performance.now();
      while (next <= now && !stopped) {
        const due = next;
        const p = one(due).finally(() => inflight.delete(p));
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
  pool.close();
  const durationMs = Math.min(performance.now(), end) - measureStart;
  const result = summarize(latencies, statuses, durationMs);
  process.stdout.write(JSON.stringify(result) + '\n');
}

void main();
