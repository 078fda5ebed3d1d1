import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { Db } from './pool.js';
import { withClient } from './pool.js';


// Any number that is the same in every process: it serialises concurrent migrators.
const MIGRATION_LOCK_ID = 7_215_004_411;

function migrationsDir(): string {
  // This file runs both from src/ (tsx) and from dist/src/ (compiled); the SQL lives at the
  // repository root in either case.
  const here = fileURLToPath(new URL('.', import.meta.url));
  return join(here, here.includes('/dist/') ? '../../../migrations' : '../../migrations');
}

export interface MigrationResult {
  applied: string[];
  total: number;
}

/** Applies forward-only SQL migrations in file-name order, each in its own transaction. */
export async function migrate(db: Db): Promise<MigrationResult> {
  const dir = migrationsDir();
  const files = (await readdir(dir)).filter((f) => /^\d{4}-[a-z0-9-]+\.sql$/.test(f)).sort();
  return withClient(db, async (client) => {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
      const done = new Set(
        (await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name),
      );
      const applied: string[] = [];
      for (const file of files) {
        if (done.has(file)) continue;
        const sql = await readFile(join(dir, file), 'utf8');
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query('INSERT INTO schema_migrations (name) VALUES ($1)', [file]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK');
          throw new Error(`migration ${file} failed: ${(error as Error).message}`, { cause: error });
        }
        applied.push(file);
      }
      return { applied, total: files.length };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
    }
  });
}
