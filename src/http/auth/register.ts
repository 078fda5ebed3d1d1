import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { Pin, UserSchema, WalletSummarySchema, errorResponses } from '../schemas.js';

const Body = Type.Object(
  {
    email: Type.String({ format: 'email', maxLength: 254 }),
    password: Type.String({ minLength: 8, maxLength: 128 }),
    pin: Pin,
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    phone: Type.Optional(Type.String({ pattern: '^\\+?[0-9]{6,15}$' })),
    role: Type.Optional(Type.Union([Type.Literal('customer'), Type.Literal('merchant')], { default: 'customer' })),
    business_name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  },
  {
    additionalProperties: false,
    // A merchant needs a business name; nobody else may send one.
    if: { properties: { role: { const: 'merchant' } }, required: ['role'] },
    then: { required: ['business_name'] },
    else: { properties: { business_name: false } },
  },
);

export const register: RouteModule = (app, ctx) => {
  app.post(
    '/auth/register',
    {
      config: { rateLimit: 'register' },
      schema: {
        tags: ['auth'],
        summary: 'Create a user and their wallet',
        body: Body,
        response: {
          201: Type.Object({ user: UserSchema, wallet: WalletSummarySchema }),
          ...errorResponses(['email_taken']),
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const role = body.role ?? 'customer';
      const result = await ctx.auth.register({
        email: body.email,
        password: body.password,
        pin: body.pin,
        name: body.name,
        phone: body.phone,
        role,
        businessName: body.business_name,
      });
      return reply.code(201).send({ user: result.user, wallet: result.wallet! });
    },
  );
};
