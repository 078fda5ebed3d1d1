import { Type, type TSchema } from 'typebox';
import { ERRORS, problem, type ErrorCode } from '../errors.js';
import { TRANSACTION_TYPES } from '../ledger/types.js';

/** Integer minor units. The per-transaction maximum is checked by the service (422 limit_exceeded). */
export const Amount = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Integer minor units (paise for INR)', examples: [50000] });
export const Pin = Type.String({ pattern: '^[0-9]{4,6}$', description: '4 to 6 digits' });
export const Id = Type.String({ minLength: 1, maxLength: 64 });
export const Timestamp = Type.String({ format: 'date-time' });
export const Handle = Type.String({ examples: ['priya@wallet'] });
export const Currency = Type.String({ pattern: '^[A-Z]{3}$', examples: ['INR'] });

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'Stable machine-readable code from the error catalog (docs/errors.md)' }),
  },
  { additionalProperties: true, $id: 'Problem' },
);

export const UserSchema = Type.Object({
  id: Id,
  email: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([Type.Literal('customer'), Type.Literal('merchant'), Type.Literal('admin')]),
});

export const WalletSummarySchema = Type.Object({ id: Id, handle: Handle, currency: Currency, balance: Type.Integer() });

export const HistoryItemSchema = Type.Object({
  id: Id,
  type: Type.Enum(TRANSACTION_TYPES),
  direction: Type.Union([Type.Literal('credit'), Type.Literal('debit')]),
  amount: Type.Integer(),
  currency: Currency,
  balance_after: Type.Integer(),
  status: Type.Union([Type.Literal('posted'), Type.Literal('pending'), Type.Literal('failed')], {
    description: 'posted: the money moved; pending: held for a withdrawal; failed: a withdrawal whose hold was released (nothing left the wallet)',
  }),
  counterparty: Type.Union([Type.Object({ handle: Handle, name: Type.Union([Type.String(), Type.Null()]) }), Type.Null()]),
  note: Type.Union([Type.String(), Type.Null()]),
  created_at: Timestamp,
});

export function PageOf(item: TSchema) {
  return Type.Object({
    data: Type.Array(item),
    has_more: Type.Boolean(),
    next_cursor: Type.Union([Type.String(), Type.Null()]),
  });
}

export const IdempotencyHeaders = Type.Object(
  {
    'idempotency-key': Type.String({
      minLength: 1,
      maxLength: 255,
      pattern: '^[\\x20-\\x7E]+$',
      description: '1-255 printable ASCII characters. Retries with the same key return the first answer.',
    }),
  },
  { additionalProperties: true },
);

/**
 * Headers whose refusal has a code of its own rather than validation_failed: the schema
 * above validates them, and the error handler answers with these.
 */
export const HEADER_ERRORS: Record<string, { missing: ReturnType<typeof problem>; invalid: ReturnType<typeof problem> }> = {
  'idempotency-key': {
    missing: problem('idempotency_key_required', 'Send an Idempotency-Key header with every request that moves money'),
    invalid: problem('invalid_idempotency_key', 'The Idempotency-Key must be 1 to 255 printable ASCII characters'),
  },
};

/** What any PIN-authorized request that moves money can be refused with. */
export const MONEY_MOVEMENT_ERRORS: ErrorCode[] = [
  'idempotency_key_required',
  'invalid_idempotency_key',
  'idempotency_key_in_use',
  'idempotency_key_reused',
  'forbidden',
  'invalid_pin',
  'pin_locked',
  'insufficient_funds',
  'limit_exceeded',
  'wallet_frozen',
];

/** Codes every route can answer with. */
const COMMON: ErrorCode[] = ['validation_failed', 'internal_error', 'service_unavailable'];
const AUTHENTICATED: ErrorCode[] = ['authentication_required', 'invalid_token'];

/**
 * The error responses of a route, grouped by status, each listing its codes, so the
 * OpenAPI document names every error a route can return.
 */
export function errorResponses(codes: readonly ErrorCode[], options: { authenticated?: boolean } = {}): Record<number, unknown> {
  const all = [...new Set([...codes, ...COMMON, ...(options.authenticated ? AUTHENTICATED : [])])];
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of all) byStatus.set(ERRORS[code].status, [...(byStatus.get(ERRORS[code].status) ?? []), code]);
  const responses: Record<number, unknown> = {};
  for (const [status, list] of byStatus) {
    responses[status] = {
      description: `code: ${list.join(', ')}`,
      content: { 'application/problem+json': { schema: Type.Ref('Problem') } },
    };
  }
  return responses;
}

export const bearer = [{ bearerAuth: [] }];
