import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Rate } from './limits/rate-limiter.js';

/** Every setting of the service, typed and validated once at start. Units last in names. */
export interface Config {
  env: 'development' | 'production' | 'test';
  host: string;
  port: number;
  /** When unset, an embedded PostgreSQL is started under `dataDir`. */
  databaseUrl: string | undefined;
  dataDir: string;
  embeddedPostgresPort: number;
  databasePoolSize: number;
  redisUrl: string | undefined;
  /** Each Redis command gives up after this long and the limiter counts in memory instead. */
  redisTimeoutMs: number;
  /** Trust X-Forwarded-For from this many proxies in front (0: use the socket's address). */
  trustProxyHops: number;
  rateLimits: RateLimits;
  /** How often the in-process reconciliation checks the ledger; 0 turns it off. */
  reconcileIntervalSeconds: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  publicUrl: string;
  jwtSecret: string;
  pinPepper: string;
  gatewayWebhookSecret: string;
  bankWebhookSecret: string;
  gatewaySandbox: boolean;
  /** Where the payment gateway's API lives; defaults to the built-in sandbox. */
  gatewayUrl: string | undefined;
  /** Where the bank's payout API lives; defaults to the built-in sandbox bank. */
  bankUrl: string | undefined;
  /** How the sandbox bank answers payouts: wait for /sandbox/payouts/{id}/complete, or act at once. */
  sandboxBankMode: 'manual' | 'succeed' | 'fail' | 'never';
  outboundTimeoutMs: number;
  /** Submit payouts right after the hold commits (false leaves them to the recovery job). */
  payoutSubmitImmediately: boolean;
  dailyOutgoingLimitMinor: number;
  limitTimeZone: string;
  merchantFeeBps: number;
  paymentAttemptTtlSeconds: number;
  /** A pending attempt this old is asked about at the gateway, in case its webhook was lost. */
  paymentRecoveryAfterSeconds: number;
  /** A payout the bank has not settled in this long is cancelled and its hold released. */
  withdrawalTimeoutSeconds: number;
  /** How often the recovery jobs run; 0 turns the schedule off (they still run at start). */
  recoveryIntervalSeconds: number;
  accessTokenTtlSeconds: number;
  /** How often each process picks up sessions that other processes revoked. */
  revocationPollMs: number;
  refreshTokenTtlSeconds: number;
  pinMaxFailures: number;
  pinLockSeconds: number;
  maxTransactionAmountMinor: number;
  webhookToleranceSeconds: number;
  currency: string;
  bodyLimitBytes: number;
  shutdownGraceMs: number;
  /** Most commands one ledger batch (one database transaction) may carry. */
  ledgerMaxBatchSize: number;
  /** Ledger batches in flight at once in this process. */
  ledgerConcurrentBatches: number;
}

/** Abuse limits; a rule that is null is off. */
export interface RateLimits {
  enabled: boolean;
  loginPerIp: Rate | null;
  loginPerAccount: Rate | null;
  registerPerIp: Rate | null;
  pinPerUser: Rate | null;
  pinPerIp: Rate | null;
  webhookPerIp: Rate | null;
}

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

const SECRET_NAMES = ['JWT_SECRET', 'PIN_PEPPER', 'GATEWAY_WEBHOOK_SECRET', 'BANK_WEBHOOK_SECRET'] as const;
const MIN_SECRET_LENGTH = 32;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got ${raw}`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
  if (['0', 'false', 'no', 'off'].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!values.includes(raw as T)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`);
  return raw as T;
}

/** "<count>/<seconds>", e.g. "10/60" for ten per minute; "0" turns the rule off. */
function rate(env: Env, name: string, fallback: Rate): Rate | null {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw === '0') return null;
  const match = /^(\d{1,9})\/(\d{1,7})$/.exec(raw);
  if (!match || Number(match[1]) < 1 || Number(match[2]) < 1) {
    throw new ConfigError(`${name} must be "<count>/<seconds>" such as "10/60", or 0 to turn it off; got "${raw}"`);
  }
  return { limit: Number(match[1]), windowSeconds: Number(match[2]) };
}

function timeZone(env: Env, name: string, fallback: string): string {
  const raw = env[name] || fallback;
  try {
    new Intl.DateTimeFormat('en', { timeZone: raw });
  } catch {
    throw new ConfigError(`${name} must be an IANA time zone such as Asia/Kolkata, got "${raw}"`);
  }
  return raw;
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
  }
  return raw;
}

/**
 * Secrets come from the environment. In development, a missing secret is generated once
 * and kept in the data directory so restarts keep tokens and PIN hashes valid; in
 * production a missing secret is a start-up error.
 */
function loadSecrets(env: Env, dataDir: string, production: boolean, warnings: string[]) {
  const missing = SECRET_NAMES.filter((name) => !env[name]);
  for (const name of SECRET_NAMES) {
    const value = env[name];
    if (value && value.length < MIN_SECRET_LENGTH) {
      throw new ConfigError(`${name} must be at least ${MIN_SECRET_LENGTH} characters`);
    }
  }
  if (missing.length > 0 && production) {
    throw new ConfigError(`${missing.join(', ')} must be set when NODE_ENV=production`);
  }
  const stored: Record<string, string> = {};
  if (missing.length > 0) {
    const file = join(dataDir, 'secrets.json');
    if (existsSync(file)) Object.assign(stored, JSON.parse(readFileSync(file, 'utf8')));
    let changed = false;
    for (const name of missing) {
      if (!stored[name]) {
        stored[name] = randomBytes(32).toString('base64url');
        changed = true;
      }
    }
    if (changed) {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      writeFileSync(file, JSON.stringify(stored, null, 2) + '\n', { mode: 0o600 });
    }
    warnings.push(`${missing.join(', ')} not set: using development secrets kept in ${file}`);
  }
  const pick = (name: (typeof SECRET_NAMES)[number]) => env[name] || stored[name]!;
  return {
    jwtSecret: pick('JWT_SECRET'),
    pinPepper: pick('PIN_PEPPER'),
    gatewayWebhookSecret: pick('GATEWAY_WEBHOOK_SECRET'),
    bankWebhookSecret: pick('BANK_WEBHOOK_SECRET'),
  };
}

export function loadConfig(env: Env = process.env): { config: Config; warnings: string[] } {
  const warnings: string[] = [];
  const nodeEnv = env.NODE_ENV ?? 'development';
  if (!['development', 'production', 'test'].includes(nodeEnv)) {
    throw new ConfigError(`NODE_ENV must be development, production or test, got "${nodeEnv}"`);
  }
  const production = nodeEnv === 'production';
  const logLevel = env.LOG_LEVEL ?? (nodeEnv === 'test' ? 'silent' : 'info');
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${levels.join(', ')}, got "${logLevel}"`);
  }
  const host = env.HOST || '0.0.0.0';
  const port = integer(env, 'PORT', 3000, 0, 65535);
  const dataDir = resolve(env.DATA_DIR || '.data');
  const currency = env.CURRENCY || 'INR';
  if (!/^[A-Z]{3}$/.test(currency)) throw new ConfigError(`CURRENCY must be an ISO 4217 code, got "${currency}"`);
  const secrets = loadSecrets(env, dataDir, production, warnings);
  const config: Config = {
    env: nodeEnv as Config['env'],
    host,
    port,
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    dataDir,
    embeddedPostgresPort: integer(env, 'EMBEDDED_POSTGRES_PORT', 54329, 1024, 65535),
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 20, 1, 500),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:']),
    redisTimeoutMs: integer(env, 'REDIS_TIMEOUT_MS', 250, 10, 10_000),
    trustProxyHops: integer(env, 'TRUST_PROXY_HOPS', 0, 0, 10),
    rateLimits: {
      enabled: boolean(env, 'RATE_LIMITS_ENABLED', true),
      loginPerIp: rate(env, 'RATE_LIMIT_LOGIN_PER_IP', { limit: 60, windowSeconds: 60 }),
      loginPerAccount: rate(env, 'RATE_LIMIT_LOGIN_PER_ACCOUNT', { limit: 10, windowSeconds: 300 }),
      registerPerIp: rate(env, 'RATE_LIMIT_REGISTER_PER_IP', { limit: 20, windowSeconds: 3600 }),
      pinPerUser: rate(env, 'RATE_LIMIT_PIN_PER_USER', { limit: 60, windowSeconds: 60 }),
      pinPerIp: rate(env, 'RATE_LIMIT_PIN_PER_IP', { limit: 600, windowSeconds: 60 }),
      webhookPerIp: rate(env, 'RATE_LIMIT_WEBHOOK_PER_IP', { limit: 6000, windowSeconds: 60 }),
    },
    reconcileIntervalSeconds: integer(env, 'RECONCILE_INTERVAL_SECONDS', 300, 0, 7 * 86_400),
    logLevel: logLevel as Config['logLevel'],
    publicUrl: (url(env, 'PUBLIC_URL', ['http:', 'https:']) ?? `http://localhost:${port}`).replace(/\/$/, ''),
    ...secrets,
    gatewaySandbox: boolean(env, 'GATEWAY_SANDBOX', true),
    gatewayUrl: url(env, 'GATEWAY_URL', ['http:', 'https:']),
    bankUrl: url(env, 'BANK_URL', ['http:', 'https:']),
    sandboxBankMode: oneOf(env, 'SANDBOX_BANK_MODE', ['manual', 'succeed', 'fail', 'never'] as const, 'manual'),
    outboundTimeoutMs: integer(env, 'OUTBOUND_TIMEOUT_MS', 10_000, 100, 120_000),
    payoutSubmitImmediately: boolean(env, 'PAYOUT_SUBMIT_IMMEDIATELY', true),
    dailyOutgoingLimitMinor: integer(env, 'DAILY_OUTGOING_LIMIT_MINOR', 20_000_000, 1, 1_000_000_000_000),
    limitTimeZone: timeZone(env, 'LIMIT_TIME_ZONE', 'Asia/Kolkata'),
    merchantFeeBps: integer(env, 'MERCHANT_FEE_BPS', 0, 0, 10_000),
    paymentAttemptTtlSeconds: integer(env, 'PAYMENT_ATTEMPT_TTL_SECONDS', 1800, 1, 30 * 86_400),
    paymentRecoveryAfterSeconds: integer(env, 'PAYMENT_RECOVERY_AFTER_SECONDS', 120, 0, 86_400),
    withdrawalTimeoutSeconds: integer(env, 'WITHDRAWAL_TIMEOUT_SECONDS', 1800, 1, 7 * 86_400),
    recoveryIntervalSeconds: integer(env, 'RECOVERY_INTERVAL_SECONDS', 30, 0, 86_400),
    accessTokenTtlSeconds: integer(env, 'ACCESS_TOKEN_TTL_SECONDS', 900, 30, 86_400),
    revocationPollMs: integer(env, 'REVOCATION_POLL_MS', 1_000, 50, 60_000),
    refreshTokenTtlSeconds: integer(env, 'REFRESH_TOKEN_TTL_SECONDS', 30 * 86_400, 60, 365 * 86_400),
    pinMaxFailures: integer(env, 'PIN_MAX_FAILURES', 5, 1, 100),
    pinLockSeconds: integer(env, 'PIN_LOCK_SECONDS', 900, 1, 86_400),
    // ₹1,00,000.00 by default; the hard ceiling keeps sums far from 2^63.
    maxTransactionAmountMinor: integer(env, 'MAX_TRANSACTION_AMOUNT_MINOR', 10_000_000, 1, 1_000_000_000_000),
    webhookToleranceSeconds: integer(env, 'WEBHOOK_TOLERANCE_SECONDS', 300, 1, 3600),
    currency,
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 64 * 1024, 1024, 10 * 1024 * 1024),
    shutdownGraceMs: integer(env, 'SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    ledgerMaxBatchSize: integer(env, 'LEDGER_MAX_BATCH_SIZE', 512, 1, 10_000),
    ledgerConcurrentBatches: integer(env, 'LEDGER_CONCURRENT_BATCHES', 2, 1, 16),
  };
  return { config, warnings };
}
