import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { UserSchema, WalletSummarySchema, bearer, errorResponses } from '../schemas.js';

export const me: RouteModule = (app, ctx) => {
  app.get(
    '/me',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['auth'],
        summary: 'The calling user and their wallet',
        security: bearer,
        response: {
          200: Type.Object({ user: UserSchema, wallet: Type.Union([WalletSummarySchema, Type.Null()]) }),
          ...errorResponses([], { authenticated: true }),
        },
      },
    },
    async (request) => ctx.auth.me(principalOf(request).userId),
  );
};
