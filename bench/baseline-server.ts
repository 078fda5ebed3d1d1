/**
 * The textbook design the benchmark compares against, on the same database and tables:
 * one database transaction per request, SELECT … FOR UPDATE of both accounts (in id order),
 * update both balances, insert the ledger transaction and its two entries, commit. It gets
 * the same HTTP framework, body validation and JWT check as the service, and looks up
 * handles and users from memory, so the difference measured is the ledger design.
 *
 * It also serves /ceiling/wallet/transfer, which does everything but the database work: the
 * most any HTTP transfer endpoint could answer on this machine with this load generator.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';
import { TokenSigner } from '../src/auth/tokens.js';

async function main(): Promise<void> {
  const { databaseUrl, port, jwtSecret } = JSON.parse(process.argv[2]!) as { databaseUrl: string; port: number; jwtSecret: string };
  const db = new pg.Pool({ connectionString: databaseUrl, max: 20 });
  const signer = new TokenSigner(jwtSecret, 86_400);
  const { rows } = await db.query<{ user_id: string; account_id: string; handle: string }>(`SELECT user_id, account_id, handle FROM wallets`);
  const accountByUser = new Map(rows.map((r) => [r.user_id, Number(r.account_id)]));
  const accountByHandle = new Map(rows.map((r) => [r.handle, Number(r.account_id)]));

  const app = Fastify({ logger: false });
  const body = {
    type: 'object',
    additionalProperties: false,
    required: ['to', 'amount', 'pin'],
    properties: { to: { type: 'string' }, merchant: { type: 'string' }, amount: { type: 'integer', minimum: 1 }, pin: { type: 'string' } },
  };
  const handler = async (request: { headers: Record<string, unknown>; body: { to?: string; merchant?: string; amount: number } }, reply: { code: (n: number) => { send: (b: unknown) => unknown } }) => {
    const claims = signer.verify(String(request.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (!claims) return reply.code(401).send({ code: 'invalid_token' });
    const from = accountByUser.get(claims.userId);
    const to = accountByHandle.get(request.body.to ?? request.body.merchant ?? '');
    if (from === undefined || to === undefined) return reply.code(404).send({ code: 'wallet_not_found' });
    const amount = request.body.amount;
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      const locked = await client.query<{ id: string; balance: string }>(
        'SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE',
        [[from, to]],
      );
      const balances = new Map(locked.rows.map((r) => [Number(r.id), Number(r.balance)]));
      if (balances.get(from)! < amount) {
        await client.query('ROLLBACK');
        return reply.code(422).send({ code: 'insufficient_funds' });
      }
      await client.query('UPDATE accounts SET balance = balance - $2 WHERE id = $1', [from, amount]);
      await client.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [to, amount]);
      const id = randomUUID();
      await client.query(`INSERT INTO ledger_transactions (id, type) VALUES ($1, 'transfer')`, [id]);
      await client.query(
        `INSERT INTO entries (transaction_id, account_id, amount, balance_after, type)
         VALUES ($1, $2, $3, $4, 'transfer'), ($1, $5, $6, $7, 'transfer')`,
        [id, from, -amount, balances.get(from)! - amount, to, amount, balances.get(to)! + amount],
      );
      await client.query('COMMIT');
      return reply.code(201).send({ transaction: { id }, balance: balances.get(from)! - amount });
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      return reply.code(500).send({ code: 'internal_error', detail: (error as Error).message });
    } finally {
      client.release();
    }
  };
  app.post('/baseline/wallet/transfer', { schema: { body } }, handler as never);
  app.post('/baseline/wallet/pay', { schema: { body: { ...body, required: ['merchant', 'amount', 'pin'] } } }, handler as never);
  // The ceiling of HTTP on this machine: the same framework, body validation and token check,
  // answering with a transfer-shaped body and no database work at all.
  app.post('/ceiling/wallet/transfer', { schema: { body } }, (async (request: { headers: Record<string, unknown> }, reply: { code: (n: number) => { send: (b: unknown) => unknown } }) => {
    const claims = signer.verify(String(request.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (!claims) return reply.code(401).send({ code: 'invalid_token' });
    return reply.code(201).send({ transaction: { id: randomUUID() }, balance: 0 });
  }) as never);
  app.get('/readyz', async () => ({ status: 'ready' }));
  await app.listen({ host: '127.0.0.1', port });
}

void main();
