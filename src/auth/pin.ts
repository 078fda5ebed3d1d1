import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Queryable } from '../db/pool.js';
import { DomainError } from '../errors.js';

export interface PinPolicy {
  pepper: string;
  maxFailures: number;
  lockSeconds: number;
}

/**
 * A PIN has only 10^6 values, so no salted hash alone protects it: anyone with the
 * database could try them all. The HMAC key (the pepper) lives only in the service's
 * configuration, never in the database, so the stored hash is useless without it.
 */
export function hashPin(pepper: string, salt: Buffer, pin: string): Buffer {
  return createHmac('sha256', pepper).update(salt).update(pin, 'utf8').digest();
}

export function newPinHash(pepper: string, pin: string): { salt: Buffer; hash: Buffer } {
  const salt = randomBytes(16);
  return { salt, hash: hashPin(pepper, salt, pin) };
}

const NOT_LOCKED = '(pin_locked_until IS NULL OR pin_locked_until <= now())';

/**
 * Checks a PIN with a lockout that holds under concurrent guesses. The verdict of every
 * attempt is applied by one atomic statement guarded by "not locked": a wrong PIN counts a
 * failure (the one that reaches the limit sets the lock in the same statement), and a right
 * PIN is accepted only if the wallet is not locked at that moment. However many guesses
 * arrive at once, the right one competes in the same order as the wrong ones, so a burst
 * buys no more chances than guessing one at a time; meanwhile a user's own concurrent
 * requests with the right PIN never lock each other out.
 */
export async function verifyPin(db: Queryable, userId: string, pin: string, policy: PinPolicy): Promise<void> {
  const { rows } = await db.query<{ pin_salt: Buffer | null; pin_hash: Buffer | null; locked: boolean }>(
    `SELECT pin_salt, pin_hash, NOT ${NOT_LOCKED} AS locked FROM users WHERE id = $1`,
    [userId],
  );
  const user = rows[0];
  if (!user?.pin_salt || !user.pin_hash) throw new DomainError('forbidden', 'This user has no PIN');
  if (user.locked) throw locked();
  if (timingSafeEqual(hashPin(policy.pepper, user.pin_salt, pin), user.pin_hash)) {
    const check = await db.query<{ failures: number }>(
      `SELECT pin_failures AS failures FROM users WHERE id = $1 AND ${NOT_LOCKED}`,
      [userId],
    );
    if (!check.rows[0]) throw locked();
    if (check.rows[0].failures > 0) {
      await db.query(`UPDATE users SET pin_failures = 0, pin_locked_until = NULL WHERE id = $1 AND ${NOT_LOCKED}`, [userId]);
    }
    return;
  }
  // A lock that has expired starts a new count.
  const failed = await db.query<{ failures: number }>(
    `UPDATE users
        SET pin_failures = CASE WHEN pin_locked_until IS NULL THEN pin_failures + 1 ELSE 1 END,
            pin_locked_until = CASE
              WHEN (CASE WHEN pin_locked_until IS NULL THEN pin_failures + 1 ELSE 1 END) >= $2
              THEN now() + make_interval(secs => $3) END
      WHERE id = $1 AND ${NOT_LOCKED}
      RETURNING pin_failures AS failures`,
    [userId, policy.maxFailures, policy.lockSeconds],
  );
  if (!failed.rows[0]) throw locked();
  const left = policy.maxFailures - failed.rows[0].failures;
  throw new DomainError(
    'invalid_pin',
    left > 0 ? `Wrong PIN; ${left} attempts left before PIN-authorized requests are locked` : 'Wrong PIN; PIN-authorized requests are now locked',
  );
}

function locked(): DomainError {
  return new DomainError('pin_locked', 'Too many wrong PINs: PIN-authorized requests are locked for a while');
}
