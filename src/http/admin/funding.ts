import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate, requireAdmin } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, Id, IdempotencyHeaders, Timestamp, bearer, errorResponses } from '../schemas.js';

const Adjustment = Type.Object({
  transaction_id: Id,
  type: Type.Literal('adjustment'),
  from: Type.String(),
  to: Type.String(),
  amount: Type.Integer(),
  reason: Type.String(),
  created_at: Timestamp,
});

const Reason = Type.String({ minLength: 3, maxLength: 280, description: 'Why: kept in the ledger and the audit log' });

const ERRORS = [
  'forbidden',
  'idempotency_key_required',
  'invalid_idempotency_key',
  'idempotency_key_in_use',
  'idempotency_key_reused',
  'insufficient_funds',
  'wallet_not_found',
  'same_wallet',
  'currency_mismatch',
] as const;

export const fundCashbackPool: RouteModule = (app, ctx) => {
  app.post(
    '/admin/cashback-pool/fund',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'Move money from the adjustments account into the cashback pool',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object({ amount: Amount, reason: Reason }, { additionalProperties: false }),
        response: { 201: Adjustment, ...errorResponses([...ERRORS], { authenticated: true }) },
      },
    },
    async (request, reply) => {
      const claim = claimFor(request, request.body);
      return ctx.idempotency.respond(reply, claim, () =>
        ctx.funding.fundCashbackPool(principalOf(request).userId, request.body.amount, request.body.reason, claim),
      );
    },
  );
};

export const adjust: RouteModule = (app, ctx) => {
  app.post(
    '/admin/adjustments',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'Post a correcting adjustment between two accounts',
        description: '`from` and `to` are wallet handles or ids, or `system:<code>` for a system account (gateway_clearing, bank_payouts, fees, cashback_pool, adjustments).',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object(
          { from: Type.String({ minLength: 1, maxLength: 64 }), to: Type.String({ minLength: 1, maxLength: 64 }), amount: Amount, reason: Reason },
          { additionalProperties: false },
        ),
        response: { 201: Adjustment, ...errorResponses([...ERRORS, 'validation_failed'], { authenticated: true }) },
      },
    },
    async (request, reply) => {
      const claim = claimFor(request, request.body);
      return ctx.idempotency.respond(reply, claim, () => ctx.funding.adjust(principalOf(request).userId, request.body, claim));
    },
  );
};
