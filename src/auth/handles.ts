import { randomInt } from 'node:crypto';

const MAX_BASE_LENGTH = 36;

/**
 * Wallet handles look like UPI ids: `priya.sharma@wallet`. The first candidate is the
 * plain name; later ones add a random number, for when the plain name is taken.
 */
export function handleCandidates(name: string, count: number): string[] {
  const base =
    name
      .normalize('NFKD')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '.')
      .replace(/^\.+|\.+$/g, '')
      .slice(0, MAX_BASE_LENGTH)
      .replace(/\.+$/, '') || 'user';
  const candidates = [`${base}@wallet`];
  for (let i = 1; i < count; i++) candidates.push(`${base}.${randomInt(1000, 10 ** Math.min(3 + i, 9))}@wallet`);
  return candidates;
}
