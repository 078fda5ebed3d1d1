import { Type } from 'typebox';
import { requireSignature, withRawBody } from './signed.js';
import type { RouteModule } from '../context.js';
import { Amount, Currency, errorResponses } from '../schemas.js';

// A gateway adds fields to its events over time; refusing them would refuse deposits, so
// unlike client requests, unknown fields here are ignored.
const Event = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 255 }),
  type: Type.Union([Type.Literal('payment.succeeded'), Type.Literal('payment.failed')]),
  data: Type.Object({
    payment_id: Type.String({ minLength: 1, maxLength: 64 }),
    amount: Amount,
    currency: Currency,
    gateway_reference: Type.Optional(Type.String({ maxLength: 255 })),
  }),
});

export const gatewayWebhook: RouteModule = (app, ctx) => {
  withRawBody(app, (scope) => {
    scope.post(
      '/webhooks/gateway',
      {
        config: { rateLimit: 'webhook' },
        preValidation: requireSignature('gateway-signature', ctx.config.gatewayWebhookSecret, ctx.config.webhookToleranceSeconds),
        schema: {
          tags: ['webhooks'],
          summary: 'Payment gateway events (signed)',
          description:
            'Header `Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. ' +
            'A payment is credited once however many times its success is delivered.',
          headers: Type.Object({ 'gateway-signature': Type.Optional(Type.String()) }, { additionalProperties: true }),
          body: Event,
          response: {
            200: Type.Object({
              received: Type.Literal(true),
              outcome: Type.Union([
                Type.Literal('credited'),
                Type.Literal('credited_after_expiry'),
                Type.Literal('marked_failed'),
                Type.Literal('already_processed'),
                Type.Literal('ignored'),
              ]),
            }),
            ...errorResponses(['invalid_signature', 'payment_not_found', 'amount_mismatch']),
          },
        },
      },
      async (request) => ({ received: true as const, outcome: await ctx.payments.handleEvent(request.body) }),
    );
  });
};
