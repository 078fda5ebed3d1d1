import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { errorResponses } from '../schemas.js';

export const healthz: RouteModule = (app) => {
  app.get(
    '/healthz',
    { schema: { tags: ['operations'], summary: 'The process is up', response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  );
};

export const readyz: RouteModule = (app, ctx) => {
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'The database is reachable',
        response: { 200: Type.Object({ status: Type.Literal('ready') }), ...errorResponses(['service_unavailable']) },
      },
    },
    async () => {
      await ctx.db.query('SELECT 1');
      return { status: 'ready' as const };
    },
  );
};

export const metrics: RouteModule = (app, ctx) => {
  app.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics (text format)',
        produces: ['text/plain'],
        response: { 200: Type.String() },
      },
    },
    async (_request, reply) => reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics()),
  );
};
