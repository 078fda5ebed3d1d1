import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { errorResponses } from '../schemas.js';
import { TokenPair } from './login.js';

export const refresh: RouteModule = (app, ctx) => {
  app.post(
    '/auth/refresh',
    {
      schema: {
        tags: ['auth'],
        summary: 'Exchange a refresh token for a new pair; the old one stops working',
        description: 'Presenting a refresh token that was already used revokes every token of that login.',
        body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false }),
        response: { 200: TokenPair, ...errorResponses(['invalid_refresh_token']) },
      },
    },
    async (request) => ctx.auth.refresh(request.body.refresh_token),
  );
};
