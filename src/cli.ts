import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.js';
import { openDatabase, type Database } from './database.js';
import { migrate } from './db/migrate.js';
import { AuthService } from './auth/service.js';
import { TokenSigner } from './auth/tokens.js';
import { RevokedSessions } from './auth/revocations.js';
import { reconcile } from './ledger/reconcile.js';
import { DomainError } from './errors.js';

const USAGE = `usage: npm run cli -- <command> [options]

commands:
  migrate                                   apply pending database migrations
  create-admin --email E --password P       create an administrator (no wallet)
  reconcile                                 check the ledger invariants; exit code 1 on any mismatch
`;

async function withDatabase<T>(fn: (database: Database) => Promise<T>): Promise<T> {
  const { config } = loadConfig();
  const database = await openDatabase(config, (m) => console.error(`[postgres] ${m}`), 2);
  try {
    await migrate(database.db);
    return await fn(database);
  } finally {
    await database.db.end();
    // Leave a server that the running service started alone; stop one we started ourselves.
    if (database.embedded && !database.embedded.adopted) await database.embedded.stop();
  }
}

async function createAdmin(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { email: { type: 'string' }, password: { type: 'string' } } });
  if (!values.email || !values.password) {
    console.error('create-admin needs --email and --password');
    return 2;
  }
  if (values.password.length < 8 || values.password.length > 128) {
    console.error('the password must be 8 to 128 characters');
    return 2;
  }
  const { config } = loadConfig();
  return withDatabase(async ({ db }) => {
    const auth = new AuthService(db, {
      signer: new TokenSigner(config.jwtSecret, config.accessTokenTtlSeconds),
      pinPepper: config.pinPepper,
      refreshTokenTtlSeconds: config.refreshTokenTtlSeconds,
      currency: config.currency,
      // Registration only: nothing here checks tokens.
      revocations: new RevokedSessions(db, config.accessTokenTtlSeconds, config.revocationPollMs, () => undefined),
    });
    const { user } = await auth.register({ email: values.email!, password: values.password!, role: 'admin', name: 'Administrator' });
    console.log(JSON.stringify({ created: 'admin', id: user.id, email: user.email }));
    return 0;
  });
}

async function runReconcile(): Promise<number> {
  return withDatabase(async ({ db }) => {
    const started = Date.now();
    let lastReport = 0;
    const result = await reconcile(db, {
      // Progress on stderr (stdout stays one JSON document), at most a few lines a second.
      onProgress: ({ phase, done, total }) => {
        if (Date.now() - lastReport < 250 && done < total) return;
        lastReport = Date.now();
        const percent = total > 0 ? Math.floor((done / total) * 100) : 100;
        console.error(`reconcile: ${phase} ${done.toLocaleString('en')}/${total.toLocaleString('en')} (${percent}%) after ${((Date.now() - started) / 1000).toFixed(1)} s`);
      },
    });
    console.log(JSON.stringify({ ...result, duration_ms: Date.now() - started }, null, 2));
    if (!result.ok) console.error(`reconciliation FAILED: ${result.violations} violation(s)`);
    return result.ok ? 0 : 1;
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'migrate':
      return withDatabase(async ({ db }) => {
        // withDatabase has migrated already; report what is there.
        const { total } = await migrate(db);
        console.log(JSON.stringify({ migrations: total, pending: 0 }));
        return 0;
      });
    case 'create-admin':
      return createAdmin(args);
    case 'reconcile':
      return runReconcile();
    default:
      console.error(USAGE);
      return command === undefined || command === 'help' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof ConfigError) console.error(`configuration error: ${error.message}`);
    else if (error instanceof DomainError) console.error(`${error.code}: ${error.detail}`);
    else console.error(error);
    process.exit(error instanceof DomainError ? 1 : 2);
  },
);
