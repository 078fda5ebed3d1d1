import type { FastifyBaseLogger } from 'fastify';
import type { PaymentService } from '../payments/service.js';
import type { GatewayClient } from '../payments/gateway-client.js';
import type { WithdrawalService } from '../funding/withdrawals.js';
import { Periodic } from './periodic.js';

export interface RecoveryReport {
  payments: { checked: number; settled: number; expired: number };
  withdrawals: { submitted: number; settled: number; timedOut: number };
}

/**
 * The jobs that make the outside world's failures harmless: lost gateway webhooks, payouts
 * a crash left unsubmitted, banks that never answer. They run at start and then on a
 * schedule; every step locks what it touches, so several processes may run them at once.
 */
export class RecoveryJobs {
  private readonly schedule: Periodic<RecoveryReport | undefined>;

  constructor(
    private readonly payments: PaymentService,
    private readonly gateway: GatewayClient,
    private readonly withdrawals: WithdrawalService,
    private readonly log: FastifyBaseLogger,
  ) {
    // pass() reports its own failures and never rejects.
    this.schedule = new Periodic(() => this.pass(undefined), () => undefined);
  }

  start(intervalSeconds: number): void {
    void this.runOnce();
    this.schedule.start(intervalSeconds * 1000);
  }

  stop(): Promise<void> {
    return this.schedule.stop();
  }

  /** One pass; a pass already running is joined rather than started twice. */
  runOnce(options: { olderThanSeconds?: number } = {}): Promise<RecoveryReport | undefined> {
    return this.schedule.run(() => this.pass(options.olderThanSeconds));
  }

  private async pass(olderThanSeconds: number | undefined): Promise<RecoveryReport | undefined> {
    try {
      // Ask the gateway before expiring, so a paid attempt is credited rather than expired.
      const recovered = await this.payments.recover(this.gateway);
      const expired = await this.payments.expire();
      const withdrawals = await this.withdrawals.recover(olderThanSeconds);
      const report = { payments: { ...recovered, expired }, withdrawals };
      if (recovered.settled + expired + withdrawals.submitted + withdrawals.settled + withdrawals.timedOut > 0) {
        this.log.info({ recovery: report }, 'recovery pass settled unfinished work');
      }
      return report;
    } catch (error) {
      this.log.error({ err: error }, 'recovery pass failed; the next one retries');
      return undefined;
    }
  }
}
