import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { TokenSigner } from '../src/auth/tokens.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const claims = { userId: '3f1c2a9e-0000-4000-8000-000000000001', sessionId: '3f1c2a9e-0000-4000-8000-000000000002', role: 'customer' as const };
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Signs arbitrary header and payload with an independent implementation. */
const joseSign = (payload: Record<string, unknown>, header: Record<string, unknown> = { alg: 'HS256' }, secret = SECRET) =>
  new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(new TextEncoder().encode(secret));

/** Signs any header at all, which a JWT library would refuse to produce. */
const rawSign = (header: Record<string, unknown>, payload: Record<string, unknown>) => {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
};

describe('access tokens', () => {
  const now = Math.floor(Date.now() / 1000);
  const valid = { sub: claims.userId, sid: claims.sessionId, role: 'customer', iss: 'wallet-service', aud: 'wallet-api', iat: now, exp: now + 600 };

  it('verifies its own tokens, and an independent JWT library agrees with them', async () => {
    const signer = new TokenSigner(SECRET, 900);
    const token = signer.sign(claims);
    assert.deepEqual(signer.verify(token), claims);
    const { payload, protectedHeader } = await jwtVerify(token, new TextEncoder().encode(SECRET), { issuer: 'wallet-service', audience: 'wallet-api' });
    assert.equal(protectedHeader.alg, 'HS256');
    assert.equal(payload.sub, claims.userId);
    assert.equal(payload.exp! - payload.iat!, 900);
  });

  it('accepts HS256 tokens signed elsewhere with the same key and claims', async () => {
    const signer = new TokenSigner(SECRET, 900);
    assert.deepEqual(signer.verify(await joseSign(valid)), claims);
    assert.deepEqual(signer.verify(rawSign({ alg: 'HS256', typ: 'JWT' }, valid)), claims);
    assert.deepEqual(signer.verify(await joseSign({ ...valid, aud: ['other', 'wallet-api'] }, { alg: 'HS256', typ: 'JWT' })), claims);
  });

  it('refuses every token that is not exactly one it would issue', async () => {
    const signer = new TokenSigner(SECRET, 900);
    const good = signer.sign(claims);
    const [h, p, s] = good.split('.') as [string, string, string];
    const elevated = b64({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), role: 'admin' });
    const cases: Record<string, string> = {
      empty: '',
      'two parts': `${h}.${p}`,
      'four parts': `${good}.x`,
      'alg none': `${b64({ alg: 'none' })}.${p}.`,
      'tampered payload': `${h}.${elevated}.${s}`,
      'signature with padding': `${good}=`,
      'signature with a stray character': `${h}.${p}.${s}!`,
      'signature of another length': `${h}.${p}.${s}A`,
      'foreign key': await joseSign(valid, { alg: 'HS256' }, 'some-other-secret-that-is-long-enough!!'),
      'HS512 with our key': await joseSign(valid, { alg: 'HS512' }),
      'critical header': rawSign({ alg: 'HS256', crit: ['exp'], exp: 1 }, valid),
      'header not an object': rawSign(['HS256'] as unknown as Record<string, unknown>, valid),
      'other typ': await joseSign(valid, { alg: 'HS256', typ: 'at+jwt' }),
      expired: await joseSign({ ...valid, exp: now - 1 }),
      'not yet valid': await joseSign({ ...valid, nbf: now + 60 }),
      'no exp': await joseSign({ ...valid, exp: undefined }),
      'no iat': await joseSign({ ...valid, iat: undefined }),
      'other issuer': await joseSign({ ...valid, iss: 'someone-else' }),
      'other audience': await joseSign({ ...valid, aud: 'another-api' }),
      'unknown role': await joseSign({ ...valid, role: 'root' }),
      'no session': await joseSign({ ...valid, sid: undefined }),
      'payload not an object': `${h}.${b64([1, 2])}.x`,
      'too long': `${h}.${'A'.repeat(5000)}.${s}`,
    };
    for (const [name, token] of Object.entries(cases)) assert.equal(signer.verify(token), undefined, name);
    // Verification failures are never cached as successes, and successes survive them.
    assert.deepEqual(signer.verify(good), claims);
  });

  it('a cached token still expires on time', () => {
    let clock = Date.now();
    const signer = new TokenSigner(SECRET, 60, () => clock);
    const token = signer.sign(claims);
    assert.deepEqual(signer.verify(token), claims);
    clock += 59_000;
    assert.deepEqual(signer.verify(token), claims);
    clock += 1_000;
    assert.equal(signer.verify(token), undefined);
    assert.equal(new TokenSigner(SECRET, 60, () => clock).verify(token), undefined);
  });
});
