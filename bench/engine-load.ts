/**
 * The ledger without HTTP: the service's own transfer code (the app built as the service
 * builds it, then WalletService.transfer and the posting engine) driven in process by
 * `connections` concurrent callers, each starting the next transfer when the last is answered. It shows what the
 * ledger and PostgreSQL do on this machine when no HTTP stack, JSON parsing or load
 * generator shares the CPU; the HTTP scenarios show what a client sees. Prints one JSON line
 * in the same shape as the load generator's.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/database.js';
import { requestHash } from '../src/idempotency/store.js';
import type { Principal } from '../src/auth/service.js';
import { drive, type DriveSpec } from './stats.js';

export interface EngineLoadSpec extends DriveSpec {
  /** The load generator's actors file: the wallets' handles and their PIN. */
  actorsFile: string;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as EngineLoadSpec;
  const actors = JSON.parse(readFileSync(spec.actorsFile, 'utf8')) as { handles: string[]; pin: string };
  // The service's own composition, minus listening: the same engine, services and settings.
  const { config } = loadConfig(process.env);
  const { db } = await openDatabase(config, () => undefined);
  const { app, ctx } = await buildApp({ config, db });
  const { rows } = await db.query<{ user_id: string; wallet_id: string; account_id: number; handle: string; pin_salt: Buffer; pin_hash: Buffer }>(
    `SELECT u.id AS user_id, w.id AS wallet_id, w.account_id, w.handle, u.pin_salt, u.pin_hash
       FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.handle = ANY($1::text[])`,
    [actors.handles],
  );
  const principals: Principal[] = rows.map((r) => ({
    userId: r.user_id,
    sessionId: randomUUID(),
    role: 'customer',
    wallet: { id: r.wallet_id, accountId: r.account_id, handle: r.handle },
    pin: { salt: r.pin_salt, hash: r.pin_hash },
  }));
  const n = principals.length;
  let counter = 0;
  const prefix = `${process.pid}-${Date.now()}`;
  const transfer = async () => {
    const i = Math.floor(Math.random() * n);
    let j = Math.floor(Math.random() * (n - 1));
    if (j >= i) j++;
    const principal = principals[i]!;
    const input = { to: principals[j]!.wallet!.handle, amount: 1, pin: actors.pin };
    const claim = { principal: `user:${principal.userId}`, key: `${prefix}-${counter++}`, requestHash: requestHash('POST', '/wallet/transfer', input) };
    return (await ctx.wallets.transfer(principal, input, claim)).statusCode;
  };

  const result = await drive(spec, transfer);
  await app.close();
  await ctx.engine.idle();
  await db.end();
  process.stdout.write(JSON.stringify(result) + '\n');
}

void main();
