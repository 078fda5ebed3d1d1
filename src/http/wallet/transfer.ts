import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, HistoryItemSchema, IdempotencyHeaders, Pin, bearer, errorResponses, MONEY_MOVEMENT_ERRORS } from '../schemas.js';

export const transfer: RouteModule = (app, ctx) => {
  app.post(
    '/wallet/transfer',
    {
      onRequest: authenticate(ctx),
      config: { rateLimit: 'pin' },
      schema: {
        tags: ['wallet'],
        summary: 'Send money to another wallet',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            to: Type.String({ minLength: 1, maxLength: 64, description: 'Wallet handle (name@wallet) or wallet id' }),
            amount: Amount,
            pin: Pin,
            note: Type.Optional(Type.String({ maxLength: 280 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            transaction: HistoryItemSchema,
            balance: Type.Integer({ description: "The sender's posted balance after the transfer" }),
          }),
          ...errorResponses([...MONEY_MOVEMENT_ERRORS, 'wallet_not_found', 'same_wallet', 'currency_mismatch'], { authenticated: true }),
        },
      },
    },
    async (request, reply) => {
      const { pin, ...fingerprint } = request.body;
      const claim = claimFor(request, fingerprint);
      return ctx.idempotency.respond(reply, claim, () =>
        ctx.wallets.transfer(principalOf(request), { ...fingerprint, pin }, claim),
      );
    },
  );
};
