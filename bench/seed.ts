import { randomBytes } from 'node:crypto';
import type { Db } from '../src/db/pool.js';
import { hashPassword } from '../src/auth/passwords.js';
import { hashPin } from '../src/auth/pin.js';
import { TokenSigner } from '../src/auth/tokens.js';
import { encodeCursor } from '../src/wallets/cursor.js';

export const PIN = '1234';

/** Customers with a session each; index i of every array is the same customer. */
export interface Seeded {
  tokens: string[];
  handles: string[];
  accountIds: number[];
  merchantHandle: string;
}

interface Secrets {
  jwtSecret: string;
  pinPepper: string;
}

/**
 * Creates `count` funded customers and one merchant straight in SQL (registering 10,000
 * users over HTTP would spend minutes in argon2), with one login session and token each.
 * Deposits are real balanced ledger transactions from the gateway clearing account.
 */
export async function seedWallets(db: Db, count: number, balance: number, secrets: Secrets): Promise<Seeded> {
  const salt = randomBytes(16);
  const pinHash = hashPin(secrets.pinPepper, salt, PIN);
  const passwordHash = await hashPassword('bench password');
  const run = randomBytes(3).toString('hex');
  const ids = Array.from({ length: count + 1 }, (_, i) => i);
  const handles = ids.map((i) => (i === 0 ? `bench.merchant.${run}@wallet` : `bench.${run}.${i}@wallet`));
  await db.query('BEGIN');
  const users = await db.query<{ id: string; n: number }>(
    `INSERT INTO users (email, password_hash, role, name, business_name, pin_salt, pin_hash)
     SELECT 'bench.' || $1 || '.' || i || '@example.com', $2, CASE WHEN i = 0 THEN 'merchant' ELSE 'customer' END,
            'Bench ' || i, CASE WHEN i = 0 THEN 'Bench Merchant' END, $3, $4
       FROM unnest($5::int[]) i
     RETURNING id, split_part(split_part(email, '@', 1), '.', 3)::int AS n`,
    [run, passwordHash, salt, pinHash, ids],
  );
  const userOf = new Map(users.rows.map((u) => [u.n, u.id]));
  const accounts = await db.query<{ id: number }>(`INSERT INTO accounts (kind, currency) SELECT 'customer', 'INR' FROM unnest($1::int[]) ORDER BY 1 RETURNING id`, [ids]);
  const accountIds = accounts.rows.map((a) => a.id).sort((a, b) => a - b);
  await db.query(
    `INSERT INTO wallets (user_id, account_id, handle, currency) SELECT u, a, h, 'INR' FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS t(u, a, h)`,
    [ids.map((i) => userOf.get(i)), accountIds, handles],
  );
  await fund(db, accountIds.slice(1), balance);
  const sessions = await db.query<{ id: string; user_id: string }>(`INSERT INTO sessions (user_id) SELECT unnest($1::uuid[]) RETURNING id, user_id`, [
    ids.slice(1).map((i) => userOf.get(i)),
  ]);
  await db.query('COMMIT');
  const sessionOf = new Map(sessions.rows.map((s) => [s.user_id, s.id]));
  const signer = new TokenSigner(secrets.jwtSecret, 86_400);
  const tokens = ids.slice(1).map((i) => signer.sign({ userId: userOf.get(i)!, sessionId: sessionOf.get(userOf.get(i)!)!, role: 'customer' }));
  return { tokens, handles: handles.slice(1), accountIds: accountIds.slice(1), merchantHandle: handles[0]! };
}

/** One deposit per account from the gateway clearing account, with correct running balances on both sides. */
async function fund(db: Db, accountIds: number[], amount: number): Promise<void> {
  const clearing = (await db.query<{ id: number; balance: number }>(`SELECT id, balance FROM accounts WHERE code = 'gateway_clearing' FOR UPDATE`)).rows[0]!;
  const tag = randomBytes(4).toString('hex');
  await db.query(
    `INSERT INTO ledger_transactions (id, type, note) SELECT md5($1 || a)::uuid, 'deposit', 'bench funding' FROM unnest($2::bigint[]) a`,
    [tag, accountIds],
  );
  await db.query(
    `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type)
     SELECT md5($1 || n.a)::uuid, x.account_id, x.amount, x.balance_after, 'deposit'
       FROM (SELECT a, row_number() OVER (ORDER BY a) AS k FROM unnest($2::bigint[]) a) n,
            LATERAL (VALUES (n.a, $3::bigint, $3::bigint, 1), ($4::bigint, -$3::bigint, $5::bigint - n.k * $3::bigint, 2)) AS x(account_id, amount, balance_after, ord)
      ORDER BY n.k, x.ord`,
    [tag, accountIds, amount, clearing.id, clearing.balance],
  );
  await db.query(`UPDATE accounts SET balance = balance + $2 WHERE id = ANY($1::bigint[])`, [accountIds, amount]);
  await db.query(`UPDATE accounts SET balance = balance - $2 WHERE id = $1`, [clearing.id, amount * accountIds.length]);
}

/**
 * Gives one wallet a history of `count` transfers in (2 × count entries, half of them on a
 * second wallet), written set-wise in chunks. The balancing trigger is off for the bulk load
 * and on again afterwards: the rows balance by construction, and the invariant check after
 * the run proves it.
 */
export async function seedHistory(db: Db, count: number, secrets: Secrets): Promise<{ token: string; cursors: string[] }> {
  const seeded = await seedWallets(db, 2, count, secrets);
  const [owner, source] = seeded.accountIds as [number, number];
  const tag = randomBytes(4).toString('hex');
  await db.query('ALTER TABLE entries DISABLE TRIGGER entries_must_balance');
  try {
    const chunk = 100_000;
    for (let start = 1; start <= count; start += chunk) {
      const end = Math.min(count, start + chunk - 1);
      await db.query(
        `INSERT INTO ledger_transactions (id, type, created_at)
         SELECT md5($1 || i)::uuid, 'transfer', now() - make_interval(secs => ($4 - i)::float8 / 100) FROM generate_series($2::int, $3::int) i`,
        [tag, start, end, count],
      );
      await db.query(
        `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type, created_at)
         SELECT md5($1 || i)::uuid, x.account_id, x.amount, x.balance_after, 'transfer', now() - make_interval(secs => ($4 - i)::float8 / 100)
           FROM generate_series($2::int, $3::int) i,
                LATERAL (VALUES ($5::bigint, -1::bigint, $4::bigint - i, 1), ($6::bigint, 1::bigint, $4::bigint + i, 2)) AS x(account_id, amount, balance_after, ord)
          ORDER BY i, x.ord`,
        [tag, start, end, count, source, owner],
      );
    }
    await db.query(`UPDATE accounts SET balance = balance - $2 WHERE id = $1`, [source, count]);
    await db.query(`UPDATE accounts SET balance = balance + $2 WHERE id = $1`, [owner, count]);
  } finally {
    await db.query('ALTER TABLE entries ENABLE TRIGGER entries_must_balance');
  }
  await db.query('ANALYZE');
  const sample = await db.query<{ id: number }>(`SELECT id FROM entries WHERE account_id = $1 ORDER BY random() LIMIT 200`, [owner]);
  return { token: seeded.tokens[0]!, cursors: sample.rows.map((r) => encodeCursor(r.id)) };
}
