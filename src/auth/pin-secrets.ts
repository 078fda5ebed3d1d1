import type { Queryable } from '../db/pool.js';
import { DomainError } from '../errors.js';

export interface PinSecret {
  salt: Buffer;
  hash: Buffer;
}

const CACHE_SIZE = 200_000;

/**
 * Users' PIN salts and keyed hashes. They never change after registration, so each is read
 * once per process; the attempt counters, which do change, live on the wallet's account row
 * and are read under the ledger's lock.
 */
export class PinSecrets {
  private readonly cache = new Map<string, PinSecret>();

  constructor(private readonly db: Queryable) {}

  async get(userId: string): Promise<PinSecret> {
    const cached = this.cache.get(userId);
    if (cached) return cached;
    const { rows } = await this.db.query<{ pin_salt: Buffer | null; pin_hash: Buffer | null }>(
      `SELECT pin_salt, pin_hash FROM users WHERE id = $1`,
      [userId],
    );
    const row = rows[0];
    if (!row?.pin_salt || !row.pin_hash) throw new DomainError('forbidden', 'This user has no transaction PIN');
    const secret = { salt: row.pin_salt, hash: row.pin_hash };
    if (this.cache.size >= CACHE_SIZE) this.cache.clear();
    this.cache.set(userId, secret);
    return secret;
  }
}
