import { createHash, createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

const ISSUER = 'wallet-service';
const AUDIENCE = 'wallet-api';
/** The only header this service issues, and the only algorithm it accepts. */
const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
const MAX_TOKEN_LENGTH = 4096;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** Verified tokens kept in memory; when full the cache starts over. */
const VERIFIED_CACHE_SIZE = 200_000;

export type Role = 'customer' | 'merchant' | 'admin';
const ROLES: ReadonlySet<string> = new Set<Role>(['customer', 'merchant', 'admin']);

export interface AccessClaims {
  userId: string;
  sessionId: string;
  role: Role;
}

const json = (segment: string): unknown => {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Access tokens: compact JWS, HS256 (RFC 7515/7519), signed and verified here with
 * node:crypto. Verification is synchronous and a few microseconds; a token already verified
 * is found in a cache keyed by its exact text, so a busy client pays one map look-up per
 * request. Expiry is checked on every use, cached or not; revocation is the caller's check.
 */
export class TokenSigner {
  private readonly key: KeyObject;
  private verified = new Map<string, AccessClaims & { exp: number }>();

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
    /** Milliseconds since the epoch; tests move it. */
    private readonly now: () => number = Date.now,
  ) {
    this.key = createSecretKey(Buffer.from(secret, 'utf8'));
  }

  get expiresIn(): number {
    return this.ttlSeconds;
  }

  private signature(signingInput: string): string {
    return createHmac('sha256', this.key).update(signingInput).digest('base64url');
  }

  sign(claims: AccessClaims): string {
    const iat = Math.floor(this.now() / 1000);
    const payload = { sid: claims.sessionId, role: claims.role, sub: claims.userId, iss: ISSUER, aud: AUDIENCE, iat, exp: iat + this.ttlSeconds };
    const input = `${HEADER}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
    return `${input}.${this.signature(input)}`;
  }

  /** Returns the claims of a valid token, or undefined for anything else (expired, tampered, wrong algorithm). */
  verify(token: string): AccessClaims | undefined {
    const nowSeconds = this.now() / 1000;
    const cached = this.verified.get(token);
    if (cached) return cached.exp > nowSeconds ? { userId: cached.userId, sessionId: cached.sessionId, role: cached.role } : undefined;
    if (token.length > MAX_TOKEN_LENGTH) return undefined;
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => BASE64URL.test(p))) return undefined;
    const [header, payload, signature] = parts as [string, string, string];
    // The signature must be exactly the canonical encoding of the expected MAC.
    const expected = Buffer.from(this.signature(`${header}.${payload}`));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    // Signed by our key, so issued by us; still, accept only what we issue.
    const h = json(header);
    if (!isObject(h) || h.alg !== 'HS256' || 'crit' in h || (h.typ !== undefined && h.typ !== 'JWT')) return undefined;
    const p = json(payload);
    if (!isObject(p)) return undefined;
    const { sub, sid, role, iss, aud, exp, iat, nbf } = p;
    if (iss !== ISSUER) return undefined;
    if (!(aud === AUDIENCE || (Array.isArray(aud) && aud.includes(AUDIENCE)))) return undefined;
    if (typeof exp !== 'number' || !Number.isFinite(exp) || exp <= nowSeconds) return undefined;
    if (typeof iat !== 'number' || !Number.isFinite(iat)) return undefined;
    if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowSeconds)) return undefined;
    if (typeof sub !== 'string' || typeof sid !== 'string' || typeof role !== 'string' || !ROLES.has(role)) return undefined;
    const claims: AccessClaims = { userId: sub, sessionId: sid, role: role as Role };
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified = new Map();
    this.verified.set(token, { ...claims, exp });
    return claims;
  }
}

/** Refresh tokens are random, opaque and stored only as their SHA-256. */
export function newRefreshToken(): { token: string; hash: Buffer } {
  const token = randomBytes(32).toString('base64url');
  return { token, hash: hashRefreshToken(token) };
}

export function hashRefreshToken(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
