/**
 * The closed catalog of error codes. Every problem+json response carries one of these
 * codes; docs/errors.md documents each (a test keeps the two in step). Domain code throws
 * `DomainError`; only the HTTP error handler turns it into a status and a body.
 */
export const ERRORS = {
  validation_failed: { status: 400, title: 'The request is not valid' },
  idempotency_key_required: { status: 400, title: 'An Idempotency-Key header is required' },
  invalid_idempotency_key: { status: 400, title: 'The Idempotency-Key header is not valid' },
  invalid_signature: { status: 400, title: 'The webhook signature is not valid' },
  invalid_cursor: { status: 400, title: 'The pagination cursor is not valid' },
  authentication_required: { status: 401, title: 'Authentication is required' },
  invalid_token: { status: 401, title: 'The access token is not valid' },
  invalid_credentials: { status: 401, title: 'The email or password is wrong' },
  invalid_refresh_token: { status: 401, title: 'The refresh token is not valid' },
  forbidden: { status: 403, title: 'You may not do this' },
  invalid_pin: { status: 403, title: 'The PIN is wrong' },
  not_found: { status: 404, title: 'No such route' },
  method_not_allowed: { status: 405, title: 'The route does not take this method' },
  wallet_not_found: { status: 404, title: 'No such wallet' },
  payment_not_found: { status: 404, title: 'No such payment' },
  transaction_not_found: { status: 404, title: 'No such transaction' },
  merchant_not_found: { status: 404, title: 'No such merchant' },
  withdrawal_not_found: { status: 404, title: 'No such withdrawal' },
  bank_account_not_found: { status: 404, title: 'No such bank account' },
  campaign_not_found: { status: 404, title: 'No such cashback campaign' },
  email_taken: { status: 409, title: 'The email is already registered' },
  bank_account_exists: { status: 409, title: 'This bank account is already registered' },
  idempotency_key_in_use: { status: 409, title: 'A request with this Idempotency-Key is still running' },
  payload_too_large: { status: 413, title: 'The request body is too large' },
  unsupported_media_type: { status: 415, title: 'The request body must be JSON' },
  idempotency_key_reused: { status: 422, title: 'The Idempotency-Key was used with a different request' },
  insufficient_funds: { status: 422, title: 'Not enough available money' },
  same_wallet: { status: 422, title: 'A wallet cannot send money to itself' },
  refund_exceeds_payment: { status: 422, title: 'Refunds would exceed the payment' },
  limit_exceeded: { status: 422, title: 'The amount exceeds a limit' },
  amount_mismatch: { status: 422, title: 'The amount or currency does not match the payment' },
  currency_mismatch: { status: 422, title: 'The wallets hold different currencies' },
  wallet_frozen: { status: 423, title: 'The wallet is frozen' },
  pin_locked: { status: 423, title: 'Too many wrong PINs; PIN-authorized requests are locked' },
  rate_limited: { status: 429, title: 'Too many requests; retry after the time in Retry-After' },
  internal_error: { status: 500, title: 'Something went wrong on our side' },
  service_unavailable: { status: 503, title: 'The service is temporarily unavailable' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class DomainError extends Error {
  readonly code: ErrorCode;
  readonly detail: string;
  readonly extra: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, detail?: string, extra?: Record<string, unknown>) {
    super(detail ?? ERRORS[code].title);
    this.code = code;
    this.detail = detail ?? ERRORS[code].title;
    this.extra = extra;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  [extra: string]: unknown;
}

export function problem(code: ErrorCode, detail?: string, extra?: Record<string, unknown>): Problem {
  const { status, title } = ERRORS[code];
  return { type: `urn:wallet:error:${code}`, title, status, detail: detail ?? title, code, ...extra };
}
