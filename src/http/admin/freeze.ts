import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate, optionalBody, requireAdmin } from '../guards.js';
import { Handle, Id, bearer, errorResponses } from '../schemas.js';

const Result = Type.Object({ id: Id, handle: Handle, status: Type.Union([Type.Literal('active'), Type.Literal('frozen')]) });
const Body = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false });

function statusRoute(action: 'freeze' | 'unfreeze'): RouteModule {
  return (app, ctx) => {
    app.post(
      `/admin/wallets/:id/${action}`,
      {
        onRequest: [authenticate(ctx), requireAdmin],
        preValidation: optionalBody,
        schema: {
          tags: ['admin'],
          summary: action === 'freeze' ? 'Freeze a wallet: it can neither send nor receive' : 'Unfreeze a wallet',
          security: bearer,
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          body: Body,
          response: { 200: Result, ...errorResponses(['forbidden', 'wallet_not_found'], { authenticated: true }) },
        },
      },
      async (request) =>
        ctx.admin.setStatus(principalOf(request).userId, request.params.id, action === 'freeze' ? 'frozen' : 'active', request.body.reason),
    );
  };
}

export const freeze = statusRoute('freeze');
export const unfreeze = statusRoute('unfreeze');
