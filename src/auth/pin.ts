import { createHmac, randomBytes } from 'node:crypto';

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
