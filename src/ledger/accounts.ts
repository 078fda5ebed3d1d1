import type { Queryable } from '../db/pool.js';

export type SystemAccountCode = 'gateway_clearing' | 'bank_payouts' | 'fees' | 'cashback_pool' | 'adjustments';

export async function createCustomerAccount(tx: Queryable, currency: string): Promise<number> {
  const { rows } = await tx.query<{ id: number }>(
    `INSERT INTO accounts (kind, currency) VALUES ('customer', $1) RETURNING id`,
    [currency],
  );
  return rows[0]!.id;
}

/** System accounts never change id once created by migration, so they are looked up once. */
export class SystemAccounts {
  private ids = new Map<string, number>();

  async load(db: Queryable): Promise<void> {
    const { rows } = await db.query<{ code: string; id: number }>(
      `SELECT code, id FROM accounts WHERE kind = 'system'`,
    );
    this.ids = new Map(rows.map((r) => [r.code, r.id]));
  }

  id(code: SystemAccountCode): number {
    const id = this.ids.get(code);
    if (id === undefined) throw new Error(`system account ${code} is missing: run the migrations`);
    return id;
  }
}
