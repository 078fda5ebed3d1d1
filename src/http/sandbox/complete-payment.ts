import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { Amount, errorResponses } from '../schemas.js';

export const sandboxCompletePayment: RouteModule = (app, ctx) => {
  if (!ctx.config.gatewaySandbox) return;
  app.post(
    '/sandbox/payments/:payment_id/complete',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Make the sandbox gateway finish a payment and deliver its signed webhook',
        params: Type.Object({ payment_id: Type.String({ maxLength: 64 }) }),
        body: Type.Object(
          {
            outcome: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]),
            amount: Type.Optional({ ...Amount, description: 'Report a different amount than the attempt (to test mismatches)' }),
            deliver_webhook: Type.Optional(Type.Boolean({ description: 'false: the gateway records the outcome but its webhook is lost (recovery finds it)' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            event_id: Type.Union([Type.String(), Type.Null()]),
            type: Type.String(),
            webhook_status: Type.Integer({ description: 'Status the wallet’s webhook answered; 0 when not delivered' }),
            webhook_response: Type.Unknown(),
          }),
          ...errorResponses(['payment_not_found']),
        },
      },
    },
    async (request) => ctx.sandbox.complete(request.params.payment_id, request.body.outcome, request.body.amount, request.body.deliver_webhook ?? true),
  );
};

export const sandboxGatewayStatus: RouteModule = (app, ctx) => {
  if (!ctx.config.gatewaySandbox) return;
  app.get(
    '/sandbox/gateway/payments/:payment_id',
    {
      schema: {
        tags: ['sandbox'],
        summary: "The sandbox gateway's status API: what the gateway knows of a payment",
        params: Type.Object({ payment_id: Type.String({ maxLength: 64 }) }),
        response: {
          200: Type.Object({ status: Type.String(), amount: Type.Integer(), currency: Type.String(), reference: Type.String() }),
          ...errorResponses(['payment_not_found']),
        },
      },
    },
    async (request) => ctx.sandbox.status(request.params.payment_id),
  );
};
