import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RateLimits } from '../config.js';
import { DomainError } from '../errors.js';
import type { Hit, RateLimiter } from '../limits/rate-limiter.js';

/** The abuse limits a route can be under; a route names one in `config.rateLimit`. */
export type RateRule = 'login' | 'register' | 'pin' | 'webhook';

declare module 'fastify' {
  interface FastifyContextConfig {
    rateLimit?: RateRule;
  }
}

function hitsFor(rule: RateRule, request: FastifyRequest, limits: RateLimits): Hit[] {
  const hits: Hit[] = [];
  const add = (name: string, subject: string | undefined, rate: Hit['rate'] | null) => {
    if (rate && subject) hits.push({ name, subject, rate });
  };
  switch (rule) {
    case 'login': {
      const email = (request.body as { email?: unknown } | undefined)?.email;
      add('login:ip', request.ip, limits.loginPerIp);
      // Per account as well, so that guessing one user's password from many addresses stops too.
      add('login:account', typeof email === 'string' ? email.trim().toLowerCase() : undefined, limits.loginPerAccount);
      break;
    }
    case 'register':
      add('register:ip', request.ip, limits.registerPerIp);
      break;
    case 'pin':
      add('pin:user', request.principal?.userId, limits.pinPerUser);
      add('pin:ip', request.ip, limits.pinPerIp);
      break;
    case 'webhook':
      add('webhook:ip', request.ip, limits.webhookPerIp);
      break;
  }
  return hits;
}

/**
 * preValidation for every route, ahead of the route's own: counts the request against its
 * route's limits after authentication (so PIN-authorized requests count per user) and before
 * webhook signatures are checked (so unsigned floods count too), and answers 429 with
 * Retry-After when one is exceeded. Nothing behind it runs, so a refused request changes nothing.
 */
export function enforceRateLimits(limiter: RateLimiter, limits: RateLimits) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const rule = request.routeOptions.config.rateLimit;
    if (!rule || !limits.enabled) return;
    const verdict = await limiter.hit(hitsFor(rule, request, limits));
    if (verdict.allowed) return;
    reply.header('retry-after', String(verdict.retryAfterSeconds));
    throw new DomainError('rate_limited', `Too many requests (${verdict.refusedBy}); retry in ${verdict.retryAfterSeconds} s`, {
      retry_after: verdict.retryAfterSeconds,
    });
  };
}
