/**
 * Loads values by key, many keys per query: every key asked for while the event loop is in
 * one turn goes into a single `load` call (the DataLoader pattern). With `cache`, values are
 * kept once found — for data that never changes once it exists (a wallet's handle, a user's
 * PIN salt), so a busy service asks the database once per key, and a cold one once per turn.
 */
export class BatchLoader<K, V> {
  private pending = new Map<K, Array<{ resolve: (v: V | undefined) => void; reject: (e: unknown) => void }>>();
  private scheduled = false;
  private readonly cache = new Map<K, V>();

  constructor(
    private readonly load: (keys: K[]) => Promise<Map<K, V>>,
    private readonly options: { cacheSize: number },
  ) {}

  get(key: K): Promise<V | undefined> {
    const cached = this.cache.get(key);
    if (cached !== undefined) return Promise.resolve(cached);
    return new Promise((resolve, reject) => {
      const waiting = this.pending.get(key);
      if (waiting) waiting.push({ resolve, reject });
      else this.pending.set(key, [{ resolve, reject }]);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.scheduled = false;
    try {
      const found = await this.load([...batch.keys()]);
      for (const [key, waiters] of batch) {
        const value = found.get(key);
        if (value !== undefined && this.options.cacheSize > 0) {
          if (this.cache.size >= this.options.cacheSize) this.cache.clear();
          this.cache.set(key, value);
        }
        for (const w of waiters) w.resolve(value);
      }
    } catch (error) {
      for (const waiters of batch.values()) for (const w of waiters) w.reject(error);
    }
  }
}
