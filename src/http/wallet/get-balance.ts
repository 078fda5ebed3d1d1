import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { Currency, Handle, Id, bearer, errorResponses } from '../schemas.js';

export const getBalance: RouteModule = (app, ctx) => {
  app.get(
    '/wallet/balance',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['wallet'],
        summary: "The caller's balances",
        security: bearer,
        response: {
          200: Type.Object({
            wallet_id: Id,
            handle: Handle,
            currency: Currency,
            balance: Type.Integer(),
            available_balance: Type.Integer(),
            held_balance: Type.Integer(),
          }),
          ...errorResponses(['forbidden'], { authenticated: true }),
        },
      },
    },
    async (request) => {
      const w = await ctx.wallets.view(principalOf(request));
      return {
        wallet_id: w.id,
        handle: w.handle,
        currency: w.currency,
        balance: w.balance,
        available_balance: w.available_balance,
        held_balance: w.held_balance,
      };
    },
  );
};
