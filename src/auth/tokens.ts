import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';

const ISSUER = 'wallet-service';
const AUDIENCE = 'wallet-api';

export type Role = 'customer' | 'merchant' | 'admin';

export interface AccessClaims {
  userId: string;
  sessionId: string;
  role: Role;
}

export class TokenSigner {
  // Imported once as a CryptoKey: jose would import raw bytes or a KeyObject again on every
  // verification, which costs more than the verification itself.
  private readonly key: Promise<webcrypto.CryptoKey>;

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
  ) {
    this.key = webcrypto.subtle.importKey('raw', Buffer.from(secret, 'utf8'), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  }

  get expiresIn(): number {
    return this.ttlSeconds;
  }

  async sign(claims: AccessClaims): Promise<string> {
    return new SignJWT({ sid: claims.sessionId, role: claims.role })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(claims.userId)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(`${this.ttlSeconds}s`)
      .sign(await this.key);
  }

  /** Returns the claims of a valid token, or undefined for anything else (expired, tampered, wrong algorithm). */
  async verify(token: string): Promise<AccessClaims | undefined> {
    try {
      const { payload } = await jwtVerify(token, await this.key, {
        algorithms: ['HS256'],
        issuer: ISSUER,
        audience: AUDIENCE,
        requiredClaims: ['sub', 'exp', 'iat'],
      });
      const { sub, sid, role } = payload as { sub?: unknown; sid?: unknown; role?: unknown };
      if (typeof sub !== 'string' || typeof sid !== 'string' || typeof role !== 'string') return undefined;
      if (!['customer', 'merchant', 'admin'].includes(role)) return undefined;
      return { userId: sub, sessionId: sid, role: role as Role };
    } catch {
      return undefined;
    }
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
