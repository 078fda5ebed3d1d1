import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { HistoryItemSchema, bearer, errorResponses } from '../schemas.js';

export const getTransaction: RouteModule = (app, ctx) => {
  app.get(
    '/transactions/:id',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['wallet'],
        summary: "One transaction, from the caller's side; only its parties may read it",
        security: bearer,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 200: HistoryItemSchema, ...errorResponses(['transaction_not_found', 'forbidden'], { authenticated: true }) },
      },
    },
    async (request) => ctx.wallets.transaction(principalOf(request), request.params.id),
  );
};
