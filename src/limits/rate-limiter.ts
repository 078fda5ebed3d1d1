import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';

/** At most `limit` hits per `windowSeconds`, counted per key (fixed window from the first hit). */
export interface Rate {
  limit: number;
  windowSeconds: number;
}

export interface Hit {
  /** Names the counter, e.g. `pin:user`; one counter per (name, subject). */
  name: string;
  subject: string;
  rate: Rate;
}

export interface Verdict {
  allowed: boolean;
  /** Whole seconds until the tightest exceeded counter resets; 0 when allowed. */
  retryAfterSeconds: number;
  /** The counter that refused, when one did. */
  refusedBy: string | undefined;
}

/** A place to count hits: Redis shared by every instance, or this process's memory. */
interface CounterStore {
  /** Adds one to each counter and returns [count, milliseconds until reset] for each. */
  increment(keys: string[], windowsMs: number[]): Promise<Array<[number, number]>>;
}

/** Counters in this process's memory: the fallback when Redis is absent or unreachable. */
export class MemoryCounters implements CounterStore {
  private readonly counters = new Map<string, { count: number; resetAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  increment(keys: string[], windowsMs: number[]): Promise<Array<[number, number]>> {
    const now = Date.now();
    return Promise.resolve(
      keys.map((key, i): [number, number] => {
        let counter = this.counters.get(key);
        if (!counter || counter.resetAt <= now) {
          counter = { count: 0, resetAt: now + windowsMs[i]! };
          this.counters.set(key, counter);
        }
        counter.count += 1;
        return [counter.count, counter.resetAt - now];
      }),
    );
  }

  /** Forgets finished windows, so that one-off addresses do not pile up. */
  private sweep(): void {
    const now = Date.now();
    for (const [key, counter] of this.counters) if (counter.resetAt <= now) this.counters.delete(key);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

// One round trip for every counter of a request; the first hit of a window starts its expiry.
const INCREMENT = `
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[i]) end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then redis.call('PEXPIRE', key, ARGV[i]); ttl = tonumber(ARGV[i]) end
  out[i] = {n, ttl}
end
return out`;

type RedisWithIncrement = Redis & { walletRateHit(...args: Array<string | number>): Promise<Array<[number, number]>> };

/** Counters in Redis, shared by every instance of the service. */
export class RedisCounters implements CounterStore {
  readonly redis: RedisWithIncrement;

  constructor(url: string, timeoutMs: number, onError: (error: Error) => void) {
    const redis = new Redis(url, {
      // Never queue or retry a command while Redis is away: the caller falls back at once.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: timeoutMs,
      connectTimeout: timeoutMs * 4,
      retryStrategy: (attempt) => Math.min(attempt * 250, 2_000),
      lazyConnect: true,
    });
    redis.defineCommand('walletRateHit', { lua: INCREMENT });
    redis.on('error', onError);
    this.redis = redis as RedisWithIncrement;
  }

  connect(): void {
    this.redis.connect().catch(() => undefined); // 'error' reports it; ioredis keeps reconnecting
  }

  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  async increment(keys: string[], windowsMs: number[]): Promise<Array<[number, number]>> {
    return this.redis.walletRateHit(keys.length, ...keys, ...windowsMs);
  }

  close(): void {
    this.redis.disconnect();
  }
}

export interface RateLimiterEvents {
  /** Redis failed a command; this hit was counted in memory instead. */
  fallback(error: Error): void;
  refused(name: string): void;
}

/**
 * Counts hits in Redis when REDIS_URL is set and Redis answers, else in memory. Redis is
 * never the source of truth for money: when it is away each instance limits on its own,
 * which is looser but keeps the service up.
 */
export class RateLimiter {
  private readonly memory = new MemoryCounters();

  constructor(
    private readonly redis: RedisCounters | undefined,
    private readonly events: RateLimiterEvents,
  ) {
    redis?.connect();
  }

  get sharedStoreUp(): boolean {
    return this.redis?.ready ?? false;
  }

  async hit(hits: Hit[]): Promise<Verdict> {
    if (hits.length === 0) return { allowed: true, retryAfterSeconds: 0, refusedBy: undefined };
    const keys = hits.map((h) => `wallet:rl:${h.name}:${digest(h.subject)}`);
    const windows = hits.map((h) => h.rate.windowSeconds * 1000);
    let counts: Array<[number, number]>;
    if (this.redis?.ready) {
      try {
        counts = await this.redis.increment(keys, windows);
      } catch (error) {
        this.events.fallback(error as Error);
        counts = await this.memory.increment(keys, windows);
      }
    } else {
      counts = await this.memory.increment(keys, windows);
    }
    let retryAfterMs = 0;
    let refusedBy: string | undefined;
    hits.forEach((h, i) => {
      const [count, resetMs] = counts[i]!;
      if (count > h.rate.limit && resetMs > retryAfterMs) {
        retryAfterMs = resetMs;
        refusedBy = h.name;
      }
    });
    if (!refusedBy) return { allowed: true, retryAfterSeconds: 0, refusedBy };
    this.events.refused(refusedBy);
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)), refusedBy };
  }

  close(): void {
    this.memory.close();
    this.redis?.close();
  }
}

/** Subjects (emails, IPs) are not stored in Redis as they are. */
function digest(subject: string): string {
  return createHash('sha256').update(subject).digest('base64url').slice(0, 22);
}
