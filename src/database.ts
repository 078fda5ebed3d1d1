import type { Config } from './config.js';
import { createPool, ensureDatabase, type Db } from './db/pool.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './db/embedded.js';

export interface Database {
  db: Db;
  embedded: EmbeddedPostgres | undefined;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL under the data directory. */
export async function openDatabase(config: Config, log: (message: string) => void, poolSize = config.databasePoolSize): Promise<Database> {
  if (config.databaseUrl) return { db: createPool(config.databaseUrl, poolSize), embedded: undefined };
  const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.embeddedPostgresPort, log });
  const url = await ensureDatabase(embedded.url, 'wallet');
  return { db: createPool(url, poolSize), embedded };
}
