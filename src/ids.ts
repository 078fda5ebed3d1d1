const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Ids are opaque to clients; inside they are UUIDs, and anything else names nothing. */
export function isUuid(value: string): boolean {
  return UUID.test(value);
}
