import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { Amount, errorResponses } from '../schemas.js';

const Payout = Type.Object({ reference: Type.String(), status: Type.String(), submissions: Type.Integer({ description: 'How many times the payout was submitted (should be 1)' }) });
const Reference = Type.Object({ reference: Type.String({ maxLength: 255 }) });

/** The sandbox bank's payout API, which BankClient calls over HTTP like a real bank's. */
export const sandboxBank: RouteModule = (app, ctx) => {
  if (!ctx.config.gatewaySandbox) return;
  app.post(
    '/sandbox/bank/payouts',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Sandbox bank: accept a payout (deduplicated by reference)',
        body: Type.Object(
          {
            reference: Type.String({ minLength: 1, maxLength: 255 }),
            amount: Amount,
            currency: Type.String({ pattern: '^[A-Z]{3}$' }),
            account_number: Type.String({ pattern: '^[0-9]{9,18}$' }),
            ifsc: Type.String({ maxLength: 11 }),
          },
          { additionalProperties: false },
        ),
        response: { 202: Payout },
      },
    },
    async (request, reply) => reply.code(202).send(await ctx.sandboxBank.receive(request.body)),
  );
  app.get(
    '/sandbox/bank/payouts/:reference',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Sandbox bank: the status of a payout',
        params: Reference,
        response: { 200: Payout, ...errorResponses(['withdrawal_not_found']) },
      },
    },
    async (request) => ctx.sandboxBank.status(request.params.reference),
  );
  app.post(
    '/sandbox/bank/payouts/:reference/cancel',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Sandbox bank: cancel a payout that has not settled (409 with its status if it has)',
        params: Reference,
        response: {
          200: Type.Object({ cancelled: Type.Boolean(), status: Type.String() }),
          409: Type.Object({ cancelled: Type.Boolean(), status: Type.String() }),
          ...errorResponses(['withdrawal_not_found']),
        },
      },
    },
    async (request, reply) => {
      const result = await ctx.sandboxBank.cancel(request.params.reference);
      return reply.code(result.cancelled ? 200 : 409).send(result);
    },
  );
};

export const sandboxCompletePayout: RouteModule = (app, ctx) => {
  if (!ctx.config.gatewaySandbox) return;
  app.post(
    '/sandbox/payouts/:withdrawal_id/complete',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Make the sandbox bank settle a payout and deliver its signed callback',
        params: Type.Object({ withdrawal_id: Type.String({ maxLength: 64 }) }),
        body: Type.Object({ outcome: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]) }, { additionalProperties: false }),
        response: {
          200: Type.Object({ event_id: Type.String(), type: Type.String(), webhook_status: Type.Integer(), webhook_response: Type.Unknown() }),
          ...errorResponses(['withdrawal_not_found']),
        },
      },
    },
    async (request) => ctx.sandboxBank.complete(request.params.withdrawal_id, request.body.outcome),
  );
};
