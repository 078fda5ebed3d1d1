import type { FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { DomainError } from '../../errors.js';
import { verifySignature } from '../../signatures.js';
import type { App } from '../context.js';

/**
 * Registers `register` in a scope whose JSON parser keeps the exact bytes received: a
 * webhook signature covers those bytes, not a re-serialisation of the parsed body.
 */
export function withRawBody(app: App, register: (scope: App) => void): void {
  void app.register(async (plain) => {
    const scope = plain.withTypeProvider<TypeBoxTypeProvider>();
    scope.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
      request.rawBody = body as Buffer;
      try {
        done(null, JSON.parse((body as Buffer).toString('utf8')));
      } catch {
        done(null, undefined);
      }
    });
    register(scope);
  });
}

/** preValidation hook: nothing unsigned is looked at further, not even for validation. */
export function requireSignature(header: string, secret: string, toleranceSeconds: number) {
  return async (request: FastifyRequest): Promise<void> => {
    const ok = verifySignature(secret, request.rawBody ?? Buffer.alloc(0), request.headers[header] as string | undefined, toleranceSeconds);
    if (!ok) throw new DomainError('invalid_signature', `Missing, malformed, stale or wrong ${header} header`);
    if (request.body === undefined) throw new DomainError('validation_failed', 'The request body is not valid JSON');
  };
}
