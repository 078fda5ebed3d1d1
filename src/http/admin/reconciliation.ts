import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { authenticate, requireAdmin } from '../guards.js';
import { bearer, errorResponses } from '../schemas.js';

export const reconciliation: RouteModule = (app, ctx) => {
  app.get(
    '/admin/reconciliation',
    {
      onRequest: [authenticate(ctx), requireAdmin],
      schema: {
        tags: ['admin'],
        summary: 'Recompute every balance from the ledger and check the invariants',
        security: bearer,
        response: {
          200: Type.Object({
            ok: Type.Boolean(),
            violations: Type.Integer({ description: 'Every invariant violation found; mismatches lists the first 100' }),
            checked_accounts: Type.Integer(),
            checked_transactions: Type.Integer(),
            total_balance: Type.Integer({ description: 'Sum of all balances; always 0 in a sound ledger' }),
            mismatches: Type.Array(Type.Object({ kind: Type.String() }, { additionalProperties: true })),
          }),
          ...errorResponses(['forbidden'], { authenticated: true }),
        },
      },
    },
    async () => ctx.admin.reconciliation(),
  );
};
