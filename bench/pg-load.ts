/**
 * The floor under the service's latency on this machine: PostgreSQL round trips with no
 * service in the way, driven open loop (as `drive` describes) from their own process
 * through the service's own pool and connection string. `commit` makes each request one
 * durable commit (a one-row update in its own transaction, flushed to disk before it is
 * answered), the least a transfer can cost; `read` makes it one primary-key read, the least
 * a history page can. The rows live in a table of their own, which is dropped afterwards.
 * Prints one JSON line in the load generator's shape.
 */
import { createPool } from '../src/db/pool.js';
import { drive, type DriveSpec } from './stats.js';

export interface PgLoadSpec extends DriveSpec {
  databaseUrl: string;
  kind: 'commit' | 'read';
}

const ROWS = 10_000;

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as PgLoadSpec;
  // The service's own pool, as the service opens it.
  const pool = createPool(spec.databaseUrl, spec.connections);
  await pool.query(`CREATE TABLE IF NOT EXISTS bench_latency_probe (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)`);
  await pool.query(`INSERT INTO bench_latency_probe (id) SELECT generate_series(1, ${ROWS}) ON CONFLICT DO NOTHING`);
  const text = spec.kind === 'commit' ? 'UPDATE bench_latency_probe SET n = n + 1 WHERE id = $1' : 'SELECT n FROM bench_latency_probe WHERE id = $1';
  const name = `bench_latency_probe_${spec.kind}`;
  const result = await drive(spec, async () => {
    const { rowCount } = await pool.query({ name, text, values: [1 + Math.floor(Math.random() * ROWS)] });
    return rowCount === 1 ? 200 : 500;
  });
  await pool.query('DROP TABLE bench_latency_probe');
  await pool.end();
  process.stdout.write(JSON.stringify(result) + '\n');
}

void main();
