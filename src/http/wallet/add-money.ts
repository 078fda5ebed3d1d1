import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, Currency, Id, IdempotencyHeaders, bearer, errorResponses } from '../schemas.js';

export const addMoney: RouteModule = (app, ctx) => {
  app.post(
    '/wallet/add-money',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['wallet'],
        summary: 'Start adding money through the payment gateway',
        description: 'Creates a payment attempt. The wallet is credited when the gateway’s signed webhook reports success.',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object({ amount: Amount }, { additionalProperties: false }),
        response: {
          201: Type.Object({
            payment_id: Id,
            status: Type.Literal('pending'),
            amount: Type.Integer(),
            currency: Currency,
            checkout_url: Type.String(),
          }),
          ...errorResponses(
            ['idempotency_key_required', 'invalid_idempotency_key', 'idempotency_key_in_use', 'idempotency_key_reused', 'limit_exceeded', 'wallet_frozen', 'forbidden'],
            { authenticated: true },
          ),
        },
      },
    },
    async (request, reply) => {
      const claim = claimFor(request, request.body);
      return ctx.idempotency.respond(reply, claim, () => ctx.payments.addMoney(principalOf(request), request.body.amount, claim));
    },
  );
};
