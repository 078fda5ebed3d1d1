import { Type } from 'typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { DomainError } from '../../errors.js';
import { verifySignature } from '../../payments/signature.js';
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
  void app.register(async (plain) => {
    const scope = plain.withTypeProvider<TypeBoxTypeProvider>();
    // The signature covers the exact bytes sent, so keep them before parsing.
    scope.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
      request.rawBody = body as Buffer;
      try {
        done(null, JSON.parse((body as Buffer).toString('utf8')));
      } catch {
        done(null, undefined);
      }
    });
    scope.post(
      '/webhooks/gateway',
      {
        // Checked before the body is validated: nothing unsigned is looked at further.
        preValidation: async (request) => {
          const ok = verifySignature(
            ctx.config.gatewayWebhookSecret,
            request.rawBody ?? Buffer.alloc(0),
            request.headers['gateway-signature'] as string | undefined,
            ctx.config.webhookToleranceSeconds,
          );
          if (!ok) throw new DomainError('invalid_signature', 'Missing, malformed, stale or wrong Gateway-Signature');
          if (request.body === undefined) throw new DomainError('validation_failed', 'The request body is not valid JSON');
        },
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
