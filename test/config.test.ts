import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { SECRETS } from './helpers.js';

describe('configuration', () => {
  it('has working defaults', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    try {
      const { config } = loadConfig({ DATA_DIR: dir });
      assert.equal(config.port, 3000);
      assert.equal(config.host, '0.0.0.0');
      assert.equal(config.databaseUrl, undefined);
      assert.equal(config.gatewaySandbox, true);
      assert.equal(config.pinMaxFailures, 5);
      assert.equal(config.pinLockSeconds, 900);
      assert.equal(config.currency, 'INR');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  for (const [name, value, message] of [
    ['PORT', 'eighty', /PORT must be a whole number/],
    ['PORT', '70000', /PORT must be between/],
    ['DATABASE_URL', 'mysql://x', /DATABASE_URL must use postgres/],
    ['DATABASE_URL', 'not a url', /DATABASE_URL is not a valid URL/],
    ['REDIS_URL', 'http://x', /REDIS_URL must use redis/],
    ['LOG_LEVEL', 'loud', /LOG_LEVEL must be one of/],
    ['GATEWAY_SANDBOX', 'maybe', /GATEWAY_SANDBOX must be true or false/],
    ['JWT_SECRET', 'short', /JWT_SECRET must be at least 32 characters/],
    ['NODE_ENV', 'staging', /NODE_ENV must be/],
    ['CURRENCY', 'rupees', /CURRENCY must be an ISO 4217 code/],
  ] as const) {
    it(`refuses ${name}=${value} with a clear message`, () => {
      assert.throws(() => loadConfig({ ...SECRETS, [name]: value }), message);
    });
  }

  it('refuses to start in production without secrets', () => {
    assert.throws(() => loadConfig({ NODE_ENV: 'production' }), /JWT_SECRET, PIN_PEPPER, GATEWAY_WEBHOOK_SECRET, BANK_WEBHOOK_SECRET must be set/);
    assert.doesNotThrow(() => loadConfig({ NODE_ENV: 'production', ...SECRETS }));
  });

  it('in development generates secrets once, keeps them private in the data directory, and warns', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    try {
      const first = loadConfig({ DATA_DIR: dir });
      assert.match(first.warnings.join('\n'), /not set: using development secrets/);
      const second = loadConfig({ DATA_DIR: dir });
      assert.equal(second.config.jwtSecret, first.config.jwtSecret);
      assert.equal(second.config.pinPepper, first.config.pinPepper);
      assert.ok(first.config.jwtSecret.length >= 32);
      assert.notEqual(first.config.jwtSecret, first.config.pinPepper);
      const file = join(dir, 'secrets.json');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.ok(readFileSync(file, 'utf8').includes(first.config.jwtSecret));
      // A secret given in the environment wins over the stored one.
      assert.equal(loadConfig({ DATA_DIR: dir, JWT_SECRET: SECRETS.JWT_SECRET }).config.jwtSecret, SECRETS.JWT_SECRET);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
