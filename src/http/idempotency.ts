import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../errors.js';
import { requestHash, type IdempotencyClaim, type IdempotentResponse } from '../idempotency/store.js';
import { principalOf } from './context.js';
import type { Db } from '../db/pool.js';
import { replayIfKnown } from '../idempotency/run.js';

/**
 * Builds the idempotency claim of a money-moving request. `fingerprint` is the request
 * body without secrets (never the PIN), so that the stored hash reveals nothing. The route's
 * `IdempotencyHeaders` schema has validated the key (and answered its own codes) already.
 */
export function claimFor(request: FastifyRequest, fingerprint: unknown): IdempotencyClaim {
  const header = request.headers['idempotency-key'];
  if (typeof header !== 'string') throw new Error('route is missing the IdempotencyHeaders schema');
  const principal = `user:${principalOf(request).userId}`;
  return { principal, key: header, requestHash: requestHash(request.method, request.routeOptions.url ?? request.url, fingerprint) };
}

/**
 * The idempotency protocol of a money-moving route. A key that is running in this process
 * gets 409; otherwise `work` runs. Every `work` looks the key up in the same database
 * transaction (or batch) that does the work, answers a finished key from the store before
 * checking anything else (no second PIN check), and stores its own answer with its effect.
 */
export class IdempotentResponder {
  // Requests running right now in this process, by principal and key.
  private readonly inFlight = new Set<string>();

  constructor(private readonly db: Db) {}

  async respond(reply: FastifyReply, claim: IdempotencyClaim, work: () => Promise<IdempotentResponse>): Promise<FastifyReply> {
    const id = `${claim.principal}\u0000${claim.key}`;
    if (this.inFlight.has(id)) {
      // Only a collision pays for a look-up: a retry racing another retry of a request that
      // has finished gets its answer; one racing the request itself gets 409.
      const stored = await replayIfKnown(this.db, claim);
      if (stored) return send(reply, stored);
      throw new DomainError('idempotency_key_in_use', 'A request with this Idempotency-Key is still being processed; retry shortly');
    }
    this.inFlight.add(id);
    try {
      return send(reply, await work());
    } finally {
      this.inFlight.delete(id);
    }
  }
}

function send(reply: FastifyReply, result: IdempotentResponse): FastifyReply {
  if (result.replayed) reply.header('idempotent-replayed', 'true');
  if (result.statusCode >= 400) reply.type('application/problem+json');
  return reply.code(result.statusCode).send(result.body);
}
