import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { errorResponses } from '../schemas.js';

export const TokenPair = Type.Object({
  access_token: Type.String(),
  refresh_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'Seconds until the access token expires' }),
});

export const login: RouteModule = (app, ctx) => {
  app.post(
    '/auth/login',
    {
      config: { rateLimit: 'login' },
      schema: {
        tags: ['auth'],
        summary: 'Log in and get an access and a refresh token',
        body: Type.Object(
          { email: Type.String({ minLength: 1, maxLength: 254 }), password: Type.String({ minLength: 1, maxLength: 128 }) },
          { additionalProperties: false },
        ),
        response: { 200: TokenPair, ...errorResponses(['invalid_credentials']) },
      },
    },
    async (request) => ctx.auth.login(request.body.email, request.body.password),
  );
};
