import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, HistoryItemSchema, Id, IdempotencyHeaders, Pin, bearer, errorResponses, MONEY_MOVEMENT_ERRORS } from '../schemas.js';

export const pay: RouteModule = (app, ctx) => {
  app.post(
    '/wallet/pay',
    {
      onRequest: authenticate(ctx),
      config: { rateLimit: 'pin' },
      schema: {
        tags: ['merchants'],
        summary: 'Pay a merchant',
        description: 'A merchant fee (MERCHANT_FEE_BPS) goes to the fees account; a running cashback campaign credits `cashback` in the same database transaction.',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            merchant: Type.String({ minLength: 1, maxLength: 64, description: "The merchant's wallet handle or id" }),
            amount: Amount,
            pin: Pin,
            order_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            transaction: HistoryItemSchema,
            balance: Type.Integer({ description: "The payer's posted balance afterwards (cashback included)" }),
            cashback: Type.Optional(Type.Object({ amount: Type.Integer(), campaign_id: Id, transaction_id: Id })),
          }),
          ...errorResponses([...MONEY_MOVEMENT_ERRORS, 'merchant_not_found', 'same_wallet', 'currency_mismatch'], { authenticated: true }),
        },
      },
    },
    async (request, reply) => {
      const { pin, ...fingerprint } = request.body;
      const claim = claimFor(request, fingerprint);
      return ctx.idempotency.respond(reply, claim, () =>
        ctx.merchants.pay(principalOf(request), { merchant: fingerprint.merchant, amount: fingerprint.amount, orderId: fingerprint.order_id, pin }, claim),
      );
    },
  );
};
