import type { Db } from '../db/pool.js';
import { isUniqueViolation } from '../db/errors.js';
import { DomainError } from '../errors.js';
import { isUuid } from '../ids.js';

export interface BankAccountView {
  id: string;
  holder_name: string;
  ifsc: string;
  /** Only the last four digits are ever shown back. */
  account_number_last4: string;
  created_at: string;
}

export interface BankAccount {
  id: string;
  accountNumber: string;
  ifsc: string;
  view: BankAccountView;
}

interface Row {
  id: string;
  holder_name: string;
  account_number: string;
  ifsc: string;
  created_at: Date;
}

function toAccount(r: Row): BankAccount {
  return {
    id: r.id,
    accountNumber: r.account_number,
    ifsc: r.ifsc,
    view: { id: r.id, holder_name: r.holder_name, ifsc: r.ifsc, account_number_last4: r.account_number.slice(-4), created_at: r.created_at.toISOString() },
  };
}

export class BankAccounts {
  constructor(private readonly db: Db) {}

  async add(userId: string, input: { accountNumber: string; ifsc: string; holderName: string }): Promise<BankAccountView> {
    try {
      const { rows } = await this.db.query<Row>(
        `INSERT INTO bank_accounts (user_id, account_number, ifsc, holder_name) VALUES ($1, $2, $3, $4)
         RETURNING id, holder_name, account_number, ifsc, created_at`,
        [userId, input.accountNumber, input.ifsc.toUpperCase(), input.holderName],
      );
      return toAccount(rows[0]!).view;
    } catch (error) {
      if (isUniqueViolation(error)) throw new DomainError('bank_account_exists', 'You registered this bank account already');
      throw error;
    }
  }

  async list(userId: string): Promise<BankAccountView[]> {
    const { rows } = await this.db.query<Row>(
      `SELECT id, holder_name, account_number, ifsc, created_at FROM bank_accounts WHERE user_id = $1 ORDER BY created_at DESC`,
      [userId],
    );
    return rows.map((r) => toAccount(r).view);
  }

  /** The caller's own bank account, with the full number for the payout; anyone else's does not exist. */
  async own(userId: string, id: string): Promise<BankAccount> {
    if (!isUuid(id)) throw new DomainError('bank_account_not_found');
    const { rows } = await this.db.query<Row>(
      `SELECT id, holder_name, account_number, ifsc, created_at FROM bank_accounts WHERE id = $1 AND user_id = $2`,
      [id, userId],
    );
    if (!rows[0]) throw new DomainError('bank_account_not_found');
    return toAccount(rows[0]);
  }
}
