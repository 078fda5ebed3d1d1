/** Translates PostgreSQL SQLSTATE codes into facts the rest of the code can act on. */

interface PgError {
  code?: string;
  constraint?: string;
}

function sqlstate(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as PgError).code : undefined;
}

export function constraintOf(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as PgError).constraint : undefined;
}

export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  return sqlstate(error) === '23505' && (constraint === undefined || constraintOf(error) === constraint);
}

/** Failures where the whole database transaction can be retried unchanged. */
export function isRetryable(error: unknown): boolean {
  const code = sqlstate(error);
  return (
    code === '40001' || // serialization_failure
    code === '40P01' || // deadlock_detected
    code === '55P03' || // lock_not_available
    code === '57P01' || // admin_shutdown (database restarting)
    code === '08006' || // connection_failure
    code === '08003' || // connection_does_not_exist
    code === '08000' || // connection_exception
    isMissingStatement(error) // prepared again on the retry (db/script.ts)
  );
}

/** The database (not the caller) is unavailable: connection refused, reset, or shutting down. */
export function isUnavailable(error: unknown): boolean {
  const code = sqlstate(error);
  if (code && (code.startsWith('08') || code === '57P01' || code === '57P03')) return true;
  const message = error instanceof Error ? error.message : '';
  return /ECONNREFUSED|ECONNRESET|Connection terminated|timeout exceeded when trying to connect/.test(message);
}

/** A prepared statement the connection should hold is gone (DISCARD or DEALLOCATE ran on it). */
export function isMissingStatement(error: unknown): boolean {
  return sqlstate(error) === '26000'; // invalid_sql_statement_name
}
