/**
 * The load generator, run as its own process so that it does not share an event loop with
 * the service: closed loop (`connections` clients back to back) or open loop (`rate`), as
 * `drive` describes. Prints one JSON line with counts and latency percentiles.
 */
import { readFileSync } from 'node:fs';
import { HttpPool } from './http-client.js';
import { drive, type DriveSpec } from './stats.js';

export interface LoadSpec extends DriveSpec {
  url: string;
  kind: 'transfer' | 'pay' | 'history';
  /** File with the actors: tokens, handles, pin. */
  actorsFile: string;
  /** For pay: the merchant (or hot wallet) handle; for history: cursors to page from. */
  target?: string;
  cursors?: string[];
  pathPrefix?: string;
}

interface Actors {
  tokens: string[];
  handles: string[];
  pin: string;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as LoadSpec;
  const actors = JSON.parse(readFileSync(spec.actorsFile, 'utf8')) as Actors;
  const pool = new HttpPool(spec.url, spec.connections);
  const n = actors.tokens.length;
  let counter = 0;
  const prefix = `${process.pid}-${Date.now()}`;

  const request = () => {
    const i = Math.floor(Math.random() * n);
    const token = actors.tokens[i]!;
    if (spec.kind === 'history') {
      const cursor = spec.cursors && spec.cursors.length > 0 && Math.random() < 0.5 ? spec.cursors[Math.floor(Math.random() * spec.cursors.length)] : undefined;
      return pool.request({
        method: 'GET',
        path: `/wallet/transactions?limit=20${cursor ? `&cursor=${cursor}` : ''}`,
        headers: { authorization: `Bearer ${token}` },
      });
    }
    let to: string;
    if (spec.target) {
      to = spec.target;
    } else {
      let j = Math.floor(Math.random() * (n - 1));
      if (j >= i) j++;
      to = actors.handles[j]!;
    }
    const body = spec.kind === 'pay' ? { merchant: to, amount: 1, pin: actors.pin } : { to, amount: 1, pin: actors.pin };
    return pool.request({
      method: 'POST',
      path: spec.kind === 'pay' ? `${spec.pathPrefix ?? ''}/wallet/pay` : `${spec.pathPrefix ?? ''}/wallet/transfer`,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `${prefix}-${counter++}` },
      body: JSON.stringify(body),
    });
  };

  const result = await drive(spec, request);
  pool.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

void main();
