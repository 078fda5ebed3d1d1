import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate, optionalBody } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, HistoryItemSchema, Id, IdempotencyHeaders, Timestamp, bearer, errorResponses } from '../schemas.js';

export const refund: RouteModule = (app, ctx) => {
  app.post(
    '/merchant/payments/:transaction_id/refund',
    {
      onRequest: authenticate(ctx),
      preValidation: optionalBody,
      schema: {
        tags: ['merchants'],
        summary: 'Refund all or part of a payment to the calling merchant',
        description: 'Without `amount`, refunds what is left. Cashback is taken back in proportion, out of the refund.',
        security: bearer,
        headers: IdempotencyHeaders,
        params: Type.Object({ transaction_id: Type.String({ maxLength: 64 }) }),
        body: Type.Object(
          { amount: Type.Optional(Amount), reason: Type.Optional(Type.String({ maxLength: 280 })) },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            refund: Type.Object({
              id: Id,
              payment_transaction_id: Id,
              amount: Type.Integer(),
              cashback_reversed: Type.Integer(),
              reason: Type.Union([Type.String(), Type.Null()]),
              created_at: Timestamp,
            }),
            transaction: HistoryItemSchema,
            balance: Type.Integer({ description: "The merchant's posted balance afterwards" }),
            payment: Type.Object({ amount: Type.Integer(), refunded: Type.Integer(), refundable: Type.Integer() }),
          }),
          ...errorResponses(
            [
              'idempotency_key_required',
              'invalid_idempotency_key',
              'forbidden',
              'payment_not_found',
              'idempotency_key_in_use',
              'idempotency_key_reused',
              'refund_exceeds_payment',
              'insufficient_funds',
              'limit_exceeded',
              'wallet_frozen',
            ],
            { authenticated: true },
          ),
        },
      },
    },
    async (request, reply) => {
      const claim = claimFor(request, { payment: request.params.transaction_id, ...request.body });
      return ctx.idempotency.respond(reply, claim, () =>
        ctx.merchants.refund(principalOf(request), request.params.transaction_id, request.body, claim),
      );
    },
  );
};
