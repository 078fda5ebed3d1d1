import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate, requireAdmin } from '../guards.js';
import { Id, Timestamp, bearer, errorResponses } from '../schemas.js';

export const CampaignSchema = Type.Object({
  id: Id,
  name: Type.String(),
  percent_bps: Type.Integer(),
  cap_per_payment: Type.Integer(),
  budget: Type.Integer(),
  spent: Type.Integer(),
  merchant_wallet_id: Type.Union([Id, Type.Null()]),
  starts_at: Timestamp,
  ends_at: Timestamp,
  created_at: Timestamp,
});

export const createCampaign: RouteModule = (app, ctx) => {
  app.post(
    '/admin/cashback-campaigns',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'Create a cashback campaign funded from the cashback pool',
        security: bearer,
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 100 }),
            percent_bps: Type.Integer({ minimum: 1, maximum: 10_000, description: 'Cashback in basis points of the payment (1000 = 10%)' }),
            cap_per_payment: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
            budget: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Total cashback the campaign may ever give' }),
            starts_at: Timestamp,
            ends_at: Timestamp,
            merchant: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Only payments to this merchant (handle or wallet id)' })),
          },
          { additionalProperties: false },
        ),
        response: { 201: CampaignSchema, ...errorResponses(['forbidden', 'merchant_not_found'], { authenticated: true }) },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const campaign = await ctx.funding.createCampaign(principalOf(request).userId, {
        name: b.name,
        percentBps: b.percent_bps,
        capPerPayment: b.cap_per_payment,
        budget: b.budget,
        startsAt: new Date(b.starts_at),
        endsAt: new Date(b.ends_at),
        merchant: b.merchant,
      });
      return reply.code(201).send(campaign);
    },
  );
};

export const listCampaigns: RouteModule = (app, ctx) => {
  app.get(
    '/admin/cashback-campaigns',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'The latest 100 cashback campaigns with what each has spent',
        security: bearer,
        response: { 200: Type.Object({ data: Type.Array(CampaignSchema) }), ...errorResponses(['forbidden'], { authenticated: true }) },
      },
    },
    async () => ({ data: await ctx.funding.campaigns() }),
  );
};

export const getCampaign: RouteModule = (app, ctx) => {
  app.get(
    '/admin/cashback-campaigns/:id',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'One cashback campaign with what it has spent',
        security: bearer,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 200: CampaignSchema, ...errorResponses(['forbidden', 'campaign_not_found'], { authenticated: true }) },
      },
    },
    async (request) => ctx.funding.campaign(request.params.id),
  );
};
