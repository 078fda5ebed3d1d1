import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { Currency, Id, Timestamp, bearer, errorResponses } from '../schemas.js';

export const PaymentSchema = Type.Object({
  id: Id,
  status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('expired')]),
  amount: Type.Integer(),
  currency: Currency,
  wallet_id: Id,
  transaction_id: Type.Union([Id, Type.Null()]),
  gateway_reference: Type.Union([Type.String(), Type.Null()]),
  flagged: Type.Boolean({ description: 'The gateway reported something that did not match; under review' }),
  created_at: Timestamp,
  updated_at: Timestamp,
});

export const getPayment: RouteModule = (app, ctx) => {
  app.get(
    '/wallet/payments/:payment_id',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['wallet'],
        summary: 'A payment attempt of the caller',
        security: bearer,
        params: Type.Object({ payment_id: Type.String({ maxLength: 64 }) }),
        response: { 200: PaymentSchema, ...errorResponses(['payment_not_found', 'forbidden'], { authenticated: true }) },
      },
    },
    async (request) => ctx.payments.get(principalOf(request), request.params.payment_id),
  );
};
