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

/**
 * Checks a PIN with a lockout that holds under concurrent guesses. Each check first
 * reserves an attempt by counting it as a failure in one atomic UPDATE (refused while the
 * wallet is locked), then compares; only a correct PIN gives the attempt back. However many
 * guesses arrive at once, at most `maxFailures` of them are ever compared.
 */
export async function verifyPin(db: Queryable, userId: string, pin: string, policy: PinPolicy): Promise<void> {
  // The attempt that reaches the limit sets the lock in the same statement, so a crash
  // between reserving and comparing can never leave the wallet locked for longer than
  // the lock time.
  const { rows } = await db.query<{ pin_salt: Buffer; pin_hash: Buffer; pin_failures: number }>(
    `WITH attempt AS (
       SELECT id, CASE WHEN pin_locked_until IS NOT NULL THEN 1 ELSE pin_failures + 1 END AS failures
         FROM users
        WHERE id = $1 AND pin_hash IS NOT NULL AND (pin_locked_until IS NULL OR pin_locked_until <= now())
          FOR UPDATE
     )
     UPDATE users u
        SET pin_failures = attempt.failures,
            pin_locked_until = CASE WHEN attempt.failures >= $2 THEN now() + make_interval(secs => $3) END
       FROM attempt
      WHERE u.id = attempt.id
      RETURNING u.pin_salt, u.pin_hash, u.pin_failures`,
    [userId, policy.maxFailures, policy.lockSeconds],
  );
  const row = rows[0];
  if (!row) throw new DomainError('pin_locked', 'Too many wrong PINs: PIN-authorized requests are locked for a while');
  const ok = timingSafeEqual(hashPin(policy.pepper, row.pin_salt, pin), row.pin_hash);
  if (ok) {
    await db.query(`UPDATE users SET pin_failures = 0, pin_locked_until = NULL WHERE id = $1`, [userId]);
    return;
  }
  const left = policy.maxFailures - row.pin_failures;
  throw new DomainError(
    'invalid_pin',
    left > 0 ? `Wrong PIN; ${left} attempts left before PIN-authorized requests are locked` : 'Wrong PIN; PIN-authorized requests are now locked',
  );
}
