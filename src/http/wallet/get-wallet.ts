import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { Currency, Handle, Id, bearer, errorResponses } from '../schemas.js';

export const WalletSchema = Type.Object({
  id: Id,
  handle: Handle,
  currency: Currency,
  balance: Type.Integer({ description: 'Posted money, minor units' }),
  available_balance: Type.Integer({ description: 'balance - held_balance: what can be spent' }),
  held_balance: Type.Integer({ description: 'Reserved by pending withdrawals' }),
  status: Type.Union([Type.Literal('active'), Type.Literal('frozen')]),
});

export const getWallet: RouteModule = (app, ctx) => {
  app.get(
    '/wallet',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['wallet'],
        summary: "The caller's wallet",
        security: bearer,
        response: { 200: WalletSchema, ...errorResponses(['forbidden'], { authenticated: true }) },
      },
    },
    async (request) => ctx.wallets.view(principalOf(request)),
  );
};
