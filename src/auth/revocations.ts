import type { Queryable } from '../db/pool.js';
import { Periodic } from '../jobs/periodic.js';

/**
 * Sessions ended by logout or by refresh-token reuse, as this process knows them. Access
 * tokens are checked against this set in memory instead of a database look-up per request.
 * A revocation made here applies at once; one made by another process is picked up by the
 * next poll (every `pollMs`). Revocations older than an access token's lifetime are
 * forgotten: every token of those sessions has expired anyway.
 */
export class RevokedSessions {
  private readonly revoked = new Map<string, number>();
  private since: Date = new Date(0);
  private readonly schedule: Periodic<void>;

  constructor(
    private readonly db: Queryable,
    private readonly tokenTtlSeconds: number,
    private readonly pollMs: number,
    onError: (error: unknown) => void,
  ) {
    this.schedule = new Periodic(() => this.poll(), onError);
  }

  /** Loads the revocations that can still matter, then keeps polling. */
  async start(): Promise<void> {
    this.since = new Date(Date.now() - (this.tokenTtlSeconds + 60) * 1000);
    await this.schedule.run();
    this.schedule.start(this.pollMs);
  }

  stop(): Promise<void> {
    return this.schedule.stop();
  }

  has(sessionId: string): boolean {
    return this.revoked.has(sessionId);
  }

  add(sessionId: string): void {
    this.revoked.set(sessionId, Date.now());
  }

  private async poll(): Promise<void> {
    // The window reaches back a little: a revocation whose transaction began earlier may commit later.
    const { rows } = await this.db.query<{ id: string; revoked_at: Date }>(
      `SELECT id, revoked_at FROM sessions WHERE revoked_at > $1::timestamptz - interval '30 seconds' ORDER BY revoked_at`,
      [this.since],
    );
    for (const r of rows) {
      this.revoked.set(r.id, r.revoked_at.getTime());
      if (r.revoked_at > this.since) this.since = r.revoked_at;
    }
    const forgetBefore = Date.now() - (this.tokenTtlSeconds + 60) * 1000;
    for (const [id, at] of this.revoked) if (at < forgetBefore) this.revoked.delete(id);
  }
}
