import type { FastifyRequest } from 'fastify';
import { DomainError } from '../errors.js';
import type { Context } from './context.js';

/** onRequest: resolves the bearer token to a principal, or answers 401. */
export function authenticate(ctx: Context) {
  return async (request: FastifyRequest): Promise<void> => {
    const header = request.headers.authorization;
    if (!header) throw new DomainError('authentication_required', 'Send Authorization: Bearer <access_token>');
    const match = /^Bearer ([A-Za-z0-9._~+/=-]{1,4096})$/.exec(header);
    if (!match) throw new DomainError('invalid_token', 'The Authorization header must be "Bearer <access_token>"');
    request.principal = await ctx.auth.authenticate(match[1]!);
  };
}

/** onRequest hook, after authenticate: only admins pass. */
export async function requireAdmin(request: FastifyRequest): Promise<void> {
  if (request.principal?.role !== 'admin') throw new DomainError('forbidden', 'This route is for administrators');
}

/** preValidation hook for routes whose body is optional: no body validates as `{}`. */
export async function optionalBody(request: FastifyRequest): Promise<void> {
  request.body ??= {};
}
