import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { Amount, errorResponses } from '../schemas.js';
import { requireSignature, withRawBody } from './signed.js';

const Event = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 255 }),
  type: Type.Union([Type.Literal('payout.succeeded'), Type.Literal('payout.failed')]),
  data: Type.Object({
    reference: Type.String({ minLength: 1, maxLength: 64, description: 'The withdrawal id' }),
    amount: Amount,
    reason: Type.Optional(Type.String({ maxLength: 255 })),
  }),
});

export const bankWebhook: RouteModule = (app, ctx) => {
  withRawBody(app, (scope) => {
    scope.post(
      '/webhooks/bank',
      {
        config: { rateLimit: 'webhook' },
        preValidation: requireSignature('bank-signature', ctx.config.bankWebhookSecret, ctx.config.webhookToleranceSeconds),
        schema: {
          tags: ['webhooks'],
          summary: 'Bank payout callbacks (signed)',
          description: 'Header `Bank-Signature`, the same scheme as `Gateway-Signature` with the bank secret. A payout is posted or released once however often it is reported.',
          headers: Type.Object({ 'bank-signature': Type.Optional(Type.String()) }, { additionalProperties: true }),
          body: Event,
          response: {
            200: Type.Object({
              received: Type.Literal(true),
              outcome: Type.Union([Type.Literal('posted'), Type.Literal('released'), Type.Literal('already_processed'), Type.Literal('flagged')]),
            }),
            ...errorResponses(['invalid_signature', 'withdrawal_not_found', 'amount_mismatch']),
          },
        },
      },
      async (request) => ({ received: true as const, outcome: await ctx.withdrawals.handleEvent(request.body) }),
    );
  });
};
