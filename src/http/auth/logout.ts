import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { bearer, errorResponses } from '../schemas.js';

export const logout: RouteModule = (app, ctx) => {
  app.post(
    '/auth/logout',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['auth'],
        summary: 'End this login: its refresh tokens and access tokens stop working',
        security: bearer,
        response: { 204: Type.Null({ description: 'Logged out' }), ...errorResponses([], { authenticated: true }) },
      },
    },
    async (request, reply) => {
      await ctx.auth.logout(principalOf(request).sessionId);
      return reply.code(204).send(null);
    },
  );
};
