import type { FastifyInstance, FastifyBaseLogger, RawServerDefault, FastifyRequest } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from '../config.js';
import type { Db } from '../db/pool.js';
import type { Metrics } from '../metrics.js';
import type { AuthService, Principal } from '../auth/service.js';
import type { WalletService } from '../wallets/service.js';
import type { PaymentService } from '../payments/service.js';
import type { MerchantService } from '../merchants/service.js';
import type { AdminService } from '../admin/service.js';
import type { FundingService } from '../admin/funding.js';
import type { SandboxGateway } from '../payments/sandbox.js';
import type { LedgerEngine } from '../ledger/engine.js';
import type { IdempotentResponder } from './idempotency.js';
import type { BankAccounts } from '../funding/bank-accounts.js';
import type { WithdrawalService } from '../funding/withdrawals.js';
import type { SandboxBank } from '../funding/sandbox-bank.js';
import type { RecoveryJobs } from '../jobs/recovery.js';
import type { LedgerWatch } from '../jobs/ledger-watch.js';

/** Everything a route may call. Routes never touch SQL: they call these services. */
export interface Context {
  config: Config;
  db: Db;
  metrics: Metrics;
  engine: LedgerEngine;
  auth: AuthService;
  wallets: WalletService;
  payments: PaymentService;
  merchants: MerchantService;
  admin: AdminService;
  funding: FundingService;
  sandbox: SandboxGateway;
  idempotency: IdempotentResponder;
  bankAccounts: BankAccounts;
  withdrawals: WithdrawalService;
  sandboxBank: SandboxBank;
  jobs: RecoveryJobs;
  watch: LedgerWatch;
}

export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

export type RouteModule = (app: App, ctx: Context) => void;

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    rawBody?: Buffer;
  }
}

export function principalOf(request: FastifyRequest): Principal {
  // The authenticate onRequest hook runs before every handler that calls this.
  if (!request.principal) throw new Error('route is missing the authenticate hook');
  return request.principal;
}
