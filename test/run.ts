/**
 * `npm test`: starts a throwaway embedded PostgreSQL (or uses TEST_DATABASE_URL, a server
 * URL whose user may create databases), migrates a template database once, and runs every
 * test file with node's test runner. Each file clones the template into its own database.
 * A throwaway redis-server is started too when one is installed (CI installs it; CI=true
 * without it is an error), for the tests of limits shared through Redis.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import { freePort } from './free-port.js';
import { createPool, ensureDatabase } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { redisInstalled, startRedisServer, type RedisServer } from './redis-server.js';

const TEMPLATE = 'wallet_test_template';

async function startRedis(): Promise<RedisServer | undefined> {
  if (process.env.TEST_REDIS_URL) return undefined;
  if (!redisInstalled()) {
    if (process.env.CI === 'true') throw new Error('CI needs redis-server for the shared rate-limit tests (.ci/run installs it)');
    console.warn('redis-server is not installed: the tests of limits shared through Redis will not run');
    return undefined;
  }
  return startRedisServer();
}

async function main(): Promise<number> {
  let embedded: EmbeddedPostgres | undefined;
  let dataDir: string | undefined;
  let serverUrl = process.env.TEST_DATABASE_URL;
  const redis = await startRedis();
  const redisUrl = process.env.TEST_REDIS_URL ?? redis?.url;
  if (!serverUrl) {
    dataDir = mkdtempSync(join(tmpdir(), 'wallet-test-'));
    embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), log: () => undefined });
    serverUrl = embedded.url;
  }
  try {
    const admin = createPool(serverUrl, 1);
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE}`);
    await admin.end();
    const templateUrl = await ensureDatabase(serverUrl, TEMPLATE);
    const template = createPool(templateUrl, 1);
    await migrate(template);
    await template.end();

    const files = process.argv.slice(2).length
      ? process.argv.slice(2)
      : readdirSync('test')
          .filter((f) => f.endsWith('.test.ts'))
          .sort()
          .map((f) => join('test', f));
    const code = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files],
        {
          stdio: 'inherit',
          env: { ...process.env, NODE_ENV: 'test', TEST_PG_URL: serverUrl, TEST_PG_TEMPLATE: TEMPLATE, ...(redisUrl ? { TEST_REDIS_URL: redisUrl } : {}) },
        },
      );
      child.on('exit', (c) => resolve(c ?? 1));
    });
    return code;
  } finally {
    redis?.kill();
    if (embedded) await embedded.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
