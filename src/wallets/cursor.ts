import { DomainError } from '../errors.js';

/** Cursors are opaque to clients: the id of the last entry on the page, wrapped. */
export function encodeCursor(entryId: number): string {
  return Buffer.from(`e:${entryId}`).toString('base64url');
}

export function decodeCursor(cursor: string): number {
  const match = /^e:(\d{1,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  const id = match ? Number(match[1]) : NaN;
  if (!Number.isSafeInteger(id)) throw new DomainError('invalid_cursor', 'The cursor is not one this service issued');
  return id;
}
