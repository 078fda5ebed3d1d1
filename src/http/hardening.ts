import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../errors.js';

const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
// The API explorer at /docs loads its own scripts, styles and images from this origin.
const DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

const HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

/**
 * onSend for every response, errors and 404s included: headers that stop browsers from
 * sniffing, framing or caching what the API answers. A route that serves HTML sets its own
 * Content-Security-Policy (with a nonce) and keeps it.
 */
export async function securityHeaders(request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  reply.headers(HEADERS);
  if (!reply.hasHeader('content-security-policy')) {
    reply.header('content-security-policy', request.url.startsWith('/docs') ? DOCS_CSP : API_CSP);
  }
  // Balances and tokens must not sit in shared or browser caches.
  if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
  return payload;
}

function hasNul(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (depth > 32 || value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some((v) => hasNul(v, depth + 1));
  return Object.entries(value).some(([k, v]) => k.includes('\u0000') || hasNul(v, depth + 1));
}

/**
 * preValidation for every route: PostgreSQL text cannot hold U+0000, so a string carrying
 * one is refused up front as invalid input instead of failing later inside the database.
 */
export async function rejectNulCharacters(request: FastifyRequest): Promise<void> {
  for (const [part, value] of [['body', request.body], ['querystring', request.query], ['params', request.params]] as const) {
    if (hasNul(value)) throw new DomainError('validation_failed', `${part} contains a NUL character (\\u0000), which no field accepts`);
  }
}

/**
 * Knows which methods each route path takes, so that a known path called with another
 * method gets 405 with an Allow header instead of 404.
 */
export class MethodIndex {
  private readonly routes: Array<{ pattern: RegExp; methods: Set<string> }> = [];

  add(url: string, methods: string[]): void {
    const source = url
      .split('/')
      .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    const existing = this.routes.find((r) => r.pattern.source === `^${source}/?$`);
    if (existing) for (const m of methods) existing.methods.add(m);
    else this.routes.push({ pattern: new RegExp(`^${source}/?$`), methods: new Set(methods) });
  }

  allowed(path: string): string[] {
    const methods = new Set<string>();
    for (const route of this.routes) if (route.pattern.test(path)) for (const m of route.methods) methods.add(m);
    return [...methods].sort();
  }

  /** onRequest for unmatched requests: a 405 when the path exists under other methods. */
  refuseOtherMethods(request: FastifyRequest, reply: FastifyReply): void {
    const path = request.url.split('?')[0]!;
    const allowed = this.allowed(path);
    if (allowed.length === 0) return;
    reply.header('allow', allowed.join(', '));
    throw new DomainError('method_not_allowed', `${path} takes ${allowed.join(', ')}, not ${request.method}`);
  }
}
