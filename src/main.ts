import pino from 'pino';
import { ConfigError, loadConfig } from './config.js';
import { openDatabase } from './database.js';
import { migrate } from './db/migrate.js';
import { buildApp, REDACT } from './app.js';

async function main(): Promise<void> {
  let loaded;
  try {
    loaded = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const { config, warnings } = loaded;
  const logger = pino({ level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' } });
  for (const warning of warnings) logger.warn(warning);

  const started = Date.now();
  const { db, embedded } = await openDatabase(config, (m) => logger.info({ component: 'postgres' }, m));
  const { applied } = await migrate(db);
  if (applied.length > 0) logger.info({ applied }, 'migrations applied');
  const { app, ctx } = await buildApp({ config, db, loggerInstance: logger });
  await app.listen({ host: config.host, port: config.port });
  logger.info({ startup_ms: Date.now() - started, embedded_postgres: Boolean(embedded) }, 'wallet service ready');
  // Unfinished work from before a crash is picked up now, then on a schedule.
  ctx.jobs.start(config.recoveryIntervalSeconds);
  ctx.watch.start(config.reconcileIntervalSeconds);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: no new connections, finishing requests in flight');
    const force = setTimeout(() => {
      logger.error('graceful shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdownGraceMs + 5_000);
    force.unref();
    await ctx.jobs.stop();
    await ctx.watch.stop();
    await app.close();
    await ctx.engine.idle();
    await db.end();
    if (embedded) await embedded.stop();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(`wallet service failed to start: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
