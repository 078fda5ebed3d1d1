import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { Config } from './config.js';
import type { Db } from './db/pool.js';
import { isUnavailable } from './db/errors.js';
import { DomainError, problem } from './errors.js';
import { createMetrics, type Metrics } from './metrics.js';
import { AuthService } from './auth/service.js';
import { TokenSigner } from './auth/tokens.js';
import { RevokedSessions } from './auth/revocations.js';
import { LedgerEngine } from './ledger/engine.js';
import { SystemAccounts } from './ledger/accounts.js';
import { WalletService } from './wallets/service.js';
import { PaymentService } from './payments/service.js';
import { MerchantService } from './merchants/service.js';
import { CampaignIndex } from './merchants/cashback.js';
import { SandboxGateway } from './payments/sandbox.js';
import { GatewayClient } from './payments/gateway-client.js';
import { BankAccounts } from './funding/bank-accounts.js';
import { BankClient } from './funding/bank-client.js';
import { SandboxBank } from './funding/sandbox-bank.js';
import { WithdrawalService } from './funding/withdrawals.js';
import { RecoveryJobs } from './jobs/recovery.js';
import { AdminService } from './admin/service.js';
import { FundingService } from './admin/funding.js';
import { HEADER_ERRORS, Problem, errorResponses } from './http/schemas.js';
import { routes } from './http/routes.js';
import { IdempotentResponder } from './http/idempotency.js';
import type { App, Context } from './http/context.js';
import { enforceRateLimits } from './http/rate-limits.js';
import { securityHeaders, MethodIndex, rejectNulCharacters } from './http/hardening.js';
import { RateLimiter, RedisCounters } from './limits/rate-limiter.js';
import { LedgerWatch } from './jobs/ledger-watch.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export interface BuildOptions {
  config: Config;
  db: Db;
  /** Defaults to a pino logger at config.logLevel; tests pass their own to inspect logs. */
  loggerInstance?: FastifyBaseLogger;
  metrics?: Metrics;
}

// Paths pino blanks out wherever they appear in a log line: credentials never reach logs.
export const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["gateway-signature"]',
  'req.headers["idempotency-key"]',
  '*.password',
  '*.pin',
  '*.refresh_token',
  '*.access_token',
];

/**
 * Body validation is strict: no type coercion ("100" is not an amount) and unknown fields
 * are errors, never silently dropped. Query strings and path parameters arrive as text, so
 * there numbers are coerced.
 */
function validators() {
  const base = { allErrors: false, removeAdditional: false, useDefaults: true, strict: false } as const;
  const strict = addFormats(new Ajv({ ...base, coerceTypes: false }));
  const coercing = addFormats(new Ajv({ ...base, coerceTypes: true }));
  strict.addSchema(Problem);
  coercing.addSchema(Problem);
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) =>
    (httpPart === 'body' ? strict : coercing).compile(schema);
}

export async function buildApp(options: BuildOptions): Promise<{ app: App; ctx: Context }> {
  const { config, db } = options;
  const metrics = options.metrics ?? createMetrics();
  const app = Fastify({
    ...(options.loggerInstance
      ? { loggerInstance: options.loggerInstance }
      : { logger: { level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' } } }),
    bodyLimit: config.bodyLimitBytes,
    requestIdHeader: false,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    trustProxy: config.trustProxyHops > 0 ? (_address: string, hop: number) => hop < config.trustProxyHops : false,
    // Longer than any path parameter's maxLength, so that validation answers, not the router.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 2048 },
    // Malformed URLs and over-long parameters are caught by the router before any route runs.
    frameworkErrors: (error, _request, reply) => {
      void (reply as FastifyReply).code(400).type('application/problem+json').send(problem('validation_failed', error.message.slice(0, 200)));
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validators());

  const systemAccounts = new SystemAccounts();
  await systemAccounts.load(db);
  
  const signer = new TokenSigner(config.jwtSecret, config.accessTokenTtlSeconds);
  const revocations = new RevokedSessions(db, config.accessTokenTtlSeconds, config.revocationPollMs, (error) =>
    app.log.warn({ err: error }, 'polling session revocations failed; retrying'),
  );
  await revocations.start();
  app.addHook('onClose', async () => revocations.stop());
  const auth = new AuthService(db, {
    signer,
    pinPepper: config.pinPepper,
    refreshTokenTtlSeconds: config.refreshTokenTtlSeconds,
    currency: config.currency,
    revocations,
  });
  const pin = { pepper: config.pinPepper, maxFailures: config.pinMaxFailures, lockSeconds: config.pinLockSeconds };
  const engine = new LedgerEngine(db, {
    metrics,
    timeZone: config.limitTimeZone,
    pin,
    maxBatchSize: config.ledgerMaxBatchSize,
    maxConcurrentBatches: config.ledgerConcurrentBatches,
  });
  const wallets = new WalletService(db, engine, {
    maxTransactionAmountMinor: config.maxTransactionAmountMinor,
    dailyOutgoingLimitMinor: config.dailyOutgoingLimitMinor,
  });
  // The sandboxes live on this server, whose port is known only once it listens.
  const self = () => {
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    return `http://127.0.0.1:${port}`;
  };
  const payments = new PaymentService(db, engine, wallets, systemAccounts, {
    checkoutUrl: (id) => `${config.publicUrl}/sandbox/checkout/${id}`,
    attemptTtlSeconds: config.paymentAttemptTtlSeconds,
    recoveryAfterSeconds: config.paymentRecoveryAfterSeconds,
  });
  const sandbox = new SandboxGateway(db, payments, {
    secret: config.gatewayWebhookSecret,
    webhookUrl: () => `${self()}/webhooks/gateway`,
    timeoutMs: config.outboundTimeoutMs,
  });
  const gateway = new GatewayClient(() => config.gatewayUrl ?? `${self()}/sandbox/gateway`, config.outboundTimeoutMs);
  const bankAccounts = new BankAccounts(db);
  const bank = new BankClient(() => config.bankUrl ?? `${self()}/sandbox/bank`, config.outboundTimeoutMs);
  const sandboxBank = new SandboxBank(
    db,
    { mode: config.sandboxBankMode, secret: config.bankWebhookSecret, webhookUrl: () => `${self()}/webhooks/bank`, timeoutMs: config.outboundTimeoutMs },
    app.log,
  );
  const withdrawals = new WithdrawalService(
    db,
    engine,
    wallets,
    bankAccounts,
    bank,
    systemAccounts,
    { timeoutSeconds: config.withdrawalTimeoutSeconds, submitImmediately: config.payoutSubmitImmediately },
    app.log,
  );
  const jobs = new RecoveryJobs(payments, gateway, withdrawals, app.log);
  const campaigns = new CampaignIndex(db);
  const merchants = new MerchantService(db, engine, wallets, systemAccounts, campaigns, { feeBps: config.merchantFeeBps });
  const watch = new LedgerWatch(db, metrics, app.log);
  app.addHook('onClose', async () => watch.stop());
  const admin = new AdminService(db, watch);
  const funding = new FundingService(db, engine, wallets, systemAccounts, campaigns);
  const idempotency = new IdempotentResponder(db);
  const ctx: Context = {
    config,
    db,
    metrics,
    engine,
    auth,
    wallets,
    payments,
    merchants,
    admin,
    funding,
    sandbox,
    idempotency,
    bankAccounts,
    withdrawals,
    sandboxBank,
    jobs,
    watch,
  };

  let lastRedisWarning = 0;
  const limiter = new RateLimiter(
    config.redisUrl
      ? new RedisCounters(config.redisUrl, config.redisTimeoutMs, (error) => {
          // Redis reconnects on its own; say so now and then, not on every retry.
          if (Date.now() - lastRedisWarning < 10_000) return;
          lastRedisWarning = Date.now();
          app.log.warn({ err: error }, 'Redis for rate limits is unavailable; counting in this process until it is back');
        })
      : undefined,
    {
      fallback: () => metrics.rateLimitFallbacks.inc(),
      refused: (limit) => metrics.rateLimited.inc({ limit }),
    },
  );
  metrics.probes.rateLimitRedisUp = () => limiter.sharedStoreUp;
  app.addHook('onClose', async () => limiter.close());
  const methods = new MethodIndex();

  // JSON only: Fastify's built-in text/plain parser would let a string body reach validation.
  app.removeContentTypeParser('text/plain');
  // Every route can fail on our side, and every route that takes a body can refuse it for
  // its size or media type: document those once here instead of in every route.
  app.addHook('onRoute', (route) => {
    methods.add(route.url, [route.method].flat());
    const response = (route.schema as { response?: Record<number, unknown> } | undefined)?.response;
    if (!response) return;
    const takesBody = [route.method].flat().some((m) => m === 'POST' || m === 'PUT' || m === 'PATCH');
    const limited = route.config?.rateLimit !== undefined;
    Object.assign(
      response,
      errorResponses([...(takesBody ? ['payload_too_large', 'unsupported_media_type'] as const : []), ...(limited ? ['rate_limited'] as const : [])]),
      { ...response },
    );
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (request.is404) methods.refuseOtherMethods(request, reply);
  });
  app.addHook('preValidation', rejectNulCharacters);
  app.addHook('preValidation', enforceRateLimits(limiter, config.rateLimits));
  app.addHook('onSend', securityHeaders);
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const { status, body } = toProblem(error);
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    return reply.code(status).type('application/problem+json').send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).type('application/problem+json').send(problem('not_found', `No route ${request.method} ${request.url.split('?')[0]}`));
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Wallet service',
        version: '0.1.0',
        description:
          'Wallet backend on a double-entry ledger. Money is integer minor units. Errors are ' +
          'application/problem+json with a stable `code` (see docs/errors.md).',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  app.addSchema(Problem);
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  for (const route of routes) route(app, ctx);
  await app.ready();
  return { app, ctx };
}

/** The only place that turns failures into HTTP statuses. */
function toProblem(error: FastifyError): { status: number; body: ReturnType<typeof problem> } {
  if (error instanceof DomainError) return { status: error.status, body: problem(error.code, error.detail, error.extra) };
  if (error.validation) {
    const first = error.validation[0];
    if (error.validationContext === 'headers') {
      const missing = (first?.params as { missingProperty?: string } | undefined)?.missingProperty;
      const own = missing ? HEADER_ERRORS[missing]?.missing : HEADER_ERRORS[first?.instancePath.slice(1) ?? '']?.invalid;
      if (own) return { status: own.status, body: own };
    }
    const where = error.validationContext ?? 'request';
    const path = first?.instancePath ? `${where}${first.instancePath.replace(/\//g, '.')}` : where;
    const field = (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const detail = field
      ? `${path} has an unknown field "${field}"`
      : first?.keyword === 'false schema'
        ? `${path} is not allowed here`
        : `${path} ${first?.message ?? 'is not valid'}`;
    return { status: 400, body: problem('validation_failed', detail) };
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: problem('payload_too_large') };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 415, body: problem('unsupported_media_type') };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, body: problem('validation_failed', 'The request body is empty') };
  }
  if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return { status: 400, body: problem('validation_failed', 'The request body is not valid JSON') };
  }
  if (isUnavailable(error)) return { status: 503, body: problem('service_unavailable', 'The database is unavailable; retry shortly') };
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return { status: 400, body: problem('validation_failed', error.message) };
  }
  return { status: 500, body: problem('internal_error') };
}
