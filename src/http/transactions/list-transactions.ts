import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { HistoryItemSchema, PageOf, Timestamp, bearer, errorResponses } from '../schemas.js';
import { TRANSACTION_TYPES } from '../../ledger/types.js';

const Query = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    type: Type.Optional(Type.Enum(TRANSACTION_TYPES)),
    direction: Type.Optional(Type.Union([Type.Literal('credit'), Type.Literal('debit')])),
    from: Type.Optional({ ...Timestamp, description: 'Inclusive lower bound on created_at' }),
    to: Type.Optional({ ...Timestamp, description: 'Exclusive upper bound on created_at' }),
  },
  { additionalProperties: false },
);

/** GET /wallet/transactions and its alias GET /transactions: the caller's history, newest first. */
export const listTransactions: RouteModule = (app, ctx) => {
  for (const url of ['/wallet/transactions', '/transactions']) {
    app.get(
      url,
      {
        onRequest: authenticate(ctx),
        schema: {
          tags: ['wallet'],
          summary: "The caller's history, newest first",
          security: bearer,
          querystring: Query,
          response: { 200: PageOf(HistoryItemSchema), ...errorResponses(['invalid_cursor', 'forbidden'], { authenticated: true }) },
        },
      },
      async (request) => {
        const q = request.query;
        return ctx.wallets.history(
          principalOf(request),
          {
            type: q.type,
            direction: q.direction,
            from: q.from === undefined ? undefined : new Date(q.from),
            to: q.to === undefined ? undefined : new Date(q.to),
          },
          q.cursor,
          q.limit ?? 20,
        );
      },
    );
  }
};
