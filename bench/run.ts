/**
 * `npm run bench`: the service against the textbook one-transaction-per-request design, on
 * the same PostgreSQL, in one run. Seeds funded wallets and a wallet with a long history,
 * starts both servers as their own processes, drives each scenario from a separate load
 * process, and checks the ledger invariants after every scenario. Two more scenarios show
 * what bounds the HTTP numbers on this machine: the same HTTP stack answering without a
 * database ("http ceiling"), and the service's transfer code driven in process without HTTP
 * ("p2p uniform, in-process"). Three more show the floor under the latency targets: at the
 * rates the half-peak scenarios ran at, HTTP with no database ("http floor"), and PostgreSQL
 * with no service: one durable commit per request ("commit floor") and one primary-key read
 * per request ("read floor"). Writes JSON results and a throughput-vs-concurrency SVG to
 * bench/results/.
 *
 * Settings (environment): DATABASE_URL (a server whose user may create databases; default:
 * a throwaway embedded PostgreSQL), BENCH_WALLETS (10000), BENCH_HISTORY_ENTRIES (1000000),
 * BENCH_CONCURRENCY (8,32,128,512), BENCH_DURATION_MS (8000), BENCH_WARMUP_MS (2000),
 * BENCH_SCENARIOS (all: uniform,hot,ceiling,in-process,half-peak,history,floor), BENCH_RATE
 * (the open-loop rate of half-peak; default half the uniform peak of the same run, so
 * half-peak without it needs uniform; floor needs half-peak or history).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import { createPool, ensureDatabase, type Db } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { reconcile } from '../src/ledger/reconcile.js';
import { loadConfig } from '../src/config.js';
import { seedHistory, seedWallets, PIN } from './seed.js';
import { sampleUsage, type Usage } from './procs.js';
import { lineChart } from './plot.js';
import { serviceNodeFlags } from './service-flags.js';
import { freePort } from '../test/free-port.js';
import type { LoadSpec } from './load.js';
import type { PgLoadSpec } from './pg-load.js';
import type { LoadResult } from './stats.js';

const env = process.env;
const allScenarios = ['uniform', 'hot', 'ceiling', 'in-process', 'half-peak', 'history', 'floor'];
const settings = {
  wallets: Number(env.BENCH_WALLETS ?? 10_000),
  historyEntries: Number(env.BENCH_HISTORY_ENTRIES ?? 1_000_000),
  concurrency: (env.BENCH_CONCURRENCY ?? '8,32,128,512').split(',').map(Number),
  durationMs: Number(env.BENCH_DURATION_MS ?? 8_000),
  warmupMs: Number(env.BENCH_WARMUP_MS ?? 2_000),
  scenarios: env.BENCH_SCENARIOS ? env.BENCH_SCENARIOS.split(',') : allScenarios,
};
const unknown = settings.scenarios.filter((s) => !allScenarios.includes(s));
if (unknown.length > 0) throw new Error(`BENCH_SCENARIOS: unknown ${unknown.join(', ')}; known: ${allScenarios.join(', ')}`);
const fixedRate = env.BENCH_RATE === undefined ? undefined : Number(env.BENCH_RATE);
if (fixedRate !== undefined && !(Number.isInteger(fixedRate) && fixedRate > 0)) throw new Error('BENCH_RATE must be a positive integer');
if (settings.scenarios.includes('half-peak') && !settings.scenarios.includes('uniform') && fixedRate === undefined) {
  throw new Error('BENCH_SCENARIOS: half-peak takes its rate from the uniform peak, so it needs uniform too (or BENCH_RATE)');
}
if (settings.scenarios.includes('floor') && !settings.scenarios.includes('half-peak') && !settings.scenarios.includes('history')) {
  throw new Error('BENCH_SCENARIOS: floor runs at the rates of half-peak and history, so it needs one of them');
}
const runs = (name: string) => settings.scenarios.includes(name);
/** Clients of the history scenarios: eight back to back saturate this machine. */
const HISTORY_CLIENTS = 8;

/** Mean batch size and batch duration of the service's posting engine, from its /metrics. */
async function engineStats(url: string): Promise<{ batches: number; commands: number; seconds: number; phases: Record<string, number> }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  const phases = Object.fromEntries(
    ['connect', 'read', 'evaluate', 'write'].map((p) => [p, Number(new RegExp(`^ledger_batch_phase_seconds_sum\\{phase="${p}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0)]),
  );
  return { batches: value('ledger_batch_size_count'), commands: value('ledger_batch_size_sum'), seconds: value('ledger_batch_duration_seconds_sum'), phases };
}

type Server = 'service' | 'baseline' | 'in-process' | 'postgres';
/** What a scenario drives: HTTP load (or the same transfers in process), or PostgreSQL alone. */
type ScenarioSpec = Omit<LoadSpec, 'durationMs' | 'warmupMs'> | Omit<PgLoadSpec, 'durationMs' | 'warmupMs'>;

interface Row extends LoadResult, Usage {
  mean_batch_size?: number;
  mean_batch_ms?: number;
  mean_phase_ms?: Record<string, number>;
  scenario: string;
  server: Server;
  connections: number;
  rate?: number;
  invariants: 'ok' | string;
}

async function waitReady(url: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${url} exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} never became ready`);
}

let loadPid: number | undefined;

/** Runs a load driver as its own process; it prints one JSON line of results. */
function runDriver(script: string, spec: unknown, driverEnv: NodeJS.ProcessEnv = env, flags: string[] = []): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, '--import', 'tsx', script, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'], env: driverEnv });
    loadPid = child.pid;
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`${script} exited ${code}`))));
  });
}

/** Cheap checks after every scenario; the full reconciliation runs at the end. */
async function quickInvariants(db: Db): Promise<string> {
  const { rows } = await db.query<{ total: number; negative: number }>(
    `SELECT sum(balance)::bigint AS total,
            count(*) FILTER (WHERE kind = 'customer' AND (balance < 0 OR balance - held < 0))::bigint AS negative
       FROM accounts`,
  );
  const r = rows[0]!;
  if (r.total !== 0) return `sum of balances is ${r.total}`;
  if (r.negative !== 0) return `${r.negative} customer balances below zero`;
  return 'ok';
}

async function main(): Promise<number> {
  console.log(`bench: ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB; settings ${JSON.stringify(settings)}`);
  const build = spawnSync('npm', ['run', '-s', 'build'], { stdio: 'inherit' });
  if (build.status !== 0) return 1;

  let embedded: EmbeddedPostgres | undefined;
  let dataDir: string | undefined;
  let serverUrl = env.DATABASE_URL;
  if (!serverUrl) {
    dataDir = mkdtempSync(join(tmpdir(), 'wallet-bench-'));
    embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), log: () => undefined });
    serverUrl = embedded.url;
  }
  const children: ChildProcess[] = [];
  try {
    const databaseUrl = await ensureDatabase(serverUrl, `wallet_bench_${Date.now()}`);
    const db = createPool(databaseUrl, 4);
    await migrate(db);
    const secrets = {
      JWT_SECRET: randomBytes(32).toString('hex'),
      PIN_PEPPER: randomBytes(32).toString('hex'),
      GATEWAY_WEBHOOK_SECRET: randomBytes(32).toString('hex'),
      BANK_WEBHOOK_SECRET: randomBytes(32).toString('hex'),
    };
    const keys = { jwtSecret: secrets.JWT_SECRET, pinPepper: secrets.PIN_PEPPER };

    let t0 = Date.now();
    const seeded = await seedWallets(db, settings.wallets, 100_000_000, keys);
    console.log(`seeded ${settings.wallets} funded wallets in ${Date.now() - t0} ms`);
    t0 = Date.now();
    const history = await seedHistory(db, settings.historyEntries, keys);
    console.log(`seeded a wallet with ${settings.historyEntries} transfers in ${Date.now() - t0} ms`);
    // Settle the database before each scenario: set hint bits and statistics, clean up dead
    // rows, and write every dirty page out, so that no scenario pays for the seeding or for
    // the scenario before it (an autovacuum of a million entries left by the transfer
    // scenarios once ran through the history scenarios). A scenario's own garbage is still
    // its own: autovacuum runs as it would in production.
    let settledMs = 0;
    const settle = async () => {
      const started = Date.now();
      await db.query('VACUUM (ANALYZE)');
      await db.query('CHECKPOINT');
      settledMs += Date.now() - started;
    };
    await settle();
    console.log(`vacuumed and checkpointed in ${settledMs} ms`);
    const work = mkdtempSync(join(tmpdir(), 'wallet-bench-actors-'));
    const actorsFile = join(work, 'actors.json');
    writeFileSync(actorsFile, JSON.stringify({ tokens: seeded.tokens, handles: seeded.handles, pin: PIN }));
    const historyActors = join(work, 'history.json');
    writeFileSync(historyActors, JSON.stringify({ tokens: [history.token], handles: [], pin: PIN }));

    const servicePort = await freePort();
    // BENCH_PROFILE=dir writes V8 CPU profiles of the service (when it stops) and of each
    // in-process run there.
    const profile = env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${env.BENCH_PROFILE}`] : [];
    const serviceEnv: NodeJS.ProcessEnv = {
      ...env,
      ...secrets,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      PORT: String(servicePort),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      RECOVERY_INTERVAL_SECONDS: '0',
      // The bench reconciles at the end itself; a scheduled run would land inside a scenario.
      RECONCILE_INTERVAL_SECONDS: '0',
      DAILY_OUTGOING_LIMIT_MINOR: '1000000000000',
      // The limits stay on, so their cost is in the numbers, but far above one load client.
      RATE_LIMIT_PIN_PER_USER: '100000000/60',
      RATE_LIMIT_PIN_PER_IP: '100000000/60',
    };
    // BENCH_NODE_FLAGS passes flags to the service's node (e.g. --trace-deopt), and shows its output.
    const flags = env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
    const service = spawn(process.execPath, [...serviceNodeFlags(), ...profile, ...flags, 'dist/src/main.js'], {
      stdio: ['ignore', flags.length > 0 ? 'inherit' : 'ignore', 'inherit'],
      env: serviceEnv,
    });
    children.push(service);
    const baselinePort = await freePort();
    const baseline = spawn(process.execPath, ['--import', 'tsx', 'bench/baseline-server.ts', JSON.stringify({ databaseUrl, port: baselinePort, jwtSecret: keys.jwtSecret })], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(baseline);
    const serviceUrl = `http://127.0.0.1:${servicePort}`;
    const baselineUrl = `http://127.0.0.1:${baselinePort}`;
    await waitReady(serviceUrl, service);
    await waitReady(baselineUrl, baseline);

    const rows: Row[] = [];
    const scenario = async (name: string, server: Server, spec: ScenarioSpec) => {
      if (rows.length > 0) await settle();
      const timing = { durationMs: settings.durationMs, warmupMs: settings.warmupMs };
      const before = server === 'service' ? await engineStats(serviceUrl) : undefined;
      loadPid = undefined;
      // In process, the driver is the service: its CPU is reported as the service's.
      // PostgreSQL alone: no service; the driver is the load.
      const usage = sampleUsage(
        { service: () => service.pid, baseline: () => baseline.pid, 'in-process': () => loadPid, postgres: () => undefined }[server],
        () => (server === 'in-process' ? undefined : loadPid),
      );
      const result =
        'databaseUrl' in spec
          ? await runDriver('bench/pg-load.ts', { ...spec, ...timing })
          : server === 'in-process'
            ? await runDriver('bench/engine-load.ts', { connections: spec.connections, actorsFile: spec.actorsFile, ...timing }, serviceEnv, profile)
            : await runDriver('bench/load.ts', { ...spec, ...timing });
      const used = usage.stop();
      const after = server === 'service' ? await engineStats(serviceUrl) : undefined;
      const batches = before && after ? after.batches - before.batches : 0;
      const engine =
        before && after && batches > 0
          ? {
              mean_batch_size: +((after.commands - before.commands) / batches).toFixed(1),
              mean_batch_ms: +(((after.seconds - before.seconds) / batches) * 1000).toFixed(2),
              mean_phase_ms: Object.fromEntries(Object.keys(after.phases).map((p) => [p, +(((after.phases[p]! - before.phases[p]!) / batches) * 1000).toFixed(2)])),
            }
          : {};
      const invariants = await quickInvariants(db);
      const row: Row = { scenario: name, server, connections: spec.connections, rate: spec.rate, ...result, ...used, ...engine, invariants };
      rows.push(row);
      console.log(
        `${name.padEnd(22)} ${server.padEnd(8)} c=${String(spec.connections).padStart(3)}${spec.rate ? ` rate=${spec.rate}` : ''}  ` +
          `${String(result.throughput).padStart(6)}/s  p50 ${result.p50}ms p95 ${result.p95}ms p99 ${result.p99}ms  ` +
          `errors ${result.errors}  cpu svc ${used.serviceCpu} pg ${used.postgresCpu} load ${used.loadCpu} steal ${used.stealCpu}  rss ${used.servicePeakRssMb}MB` +
          `${engine.mean_batch_size ? `  batch ${engine.mean_batch_size} cmds/${engine.mean_batch_ms}ms ${JSON.stringify(engine.mean_phase_ms)}` : ''}  invariants ${invariants}`,
      );
      if (result.errors > 0) console.log(`  statuses: ${JSON.stringify(result.statuses)}`);
      return result;
    };

    for (const c of settings.concurrency) {
      if (runs('uniform')) {
        await scenario('p2p uniform', 'service', { url: serviceUrl, kind: 'transfer', connections: c, actorsFile });
        await scenario('p2p uniform', 'baseline', { url: baselineUrl, kind: 'transfer', connections: c, actorsFile, pathPrefix: '/baseline' });
      }
      if (runs('hot')) {
        await scenario('hot merchant', 'service', { url: serviceUrl, kind: 'pay', connections: c, actorsFile, target: seeded.merchantHandle });
        await scenario('hot merchant', 'baseline', { url: baselineUrl, kind: 'pay', connections: c, actorsFile, target: seeded.merchantHandle, pathPrefix: '/baseline' });
      }
      // What bounds the HTTP numbers on this machine: HTTP alone, and the ledger alone.
      if (runs('ceiling')) await scenario('http ceiling', 'baseline', { url: baselineUrl, kind: 'transfer', connections: c, actorsFile, pathPrefix: '/ceiling' });
      if (runs('in-process')) await scenario('p2p uniform', 'in-process', { url: '', kind: 'transfer', connections: c, actorsFile });
    }
    let transferRate: number | undefined;
    // The open-loop transfer runs keep as many connections open as the largest closed-loop run.
    const transferClients = Math.max(...settings.concurrency);
    let historyRate: number | undefined;
    if (runs('half-peak')) {
      const peak = Math.max(...rows.filter((r) => r.server === 'service' && r.scenario === 'p2p uniform').map((r) => r.throughput));
      transferRate = fixedRate ?? Math.max(1, Math.round(peak / 2));
      await scenario('p2p at half peak', 'service', { url: serviceUrl, kind: 'transfer', connections: transferClients, rate: transferRate, actorsFile });
    }
    if (runs('history')) {
      // Eight clients back to back saturate this machine, so their latency is mostly queueing
      // (clients / throughput); a page's own latency is measured, as for transfers, at half
      // of that peak, sent open loop.
      const spec = { url: serviceUrl, kind: 'history', actorsFile: historyActors, cursors: history.cursors } as const;
      const saturated = await scenario('history 1M entries', 'service', { ...spec, connections: HISTORY_CLIENTS });
      historyRate = Math.max(1, Math.round(saturated.throughput / 2));
      await scenario('history at half peak', 'service', { ...spec, connections: HISTORY_CLIENTS, rate: historyRate });
    }
    if (runs('floor')) {
      // The same rates with nothing of the service in the way: what this machine itself adds
      // to a request's latency (waking processes across cores, flushing to disk, and whatever
      // the hypervisor takes; see steal). A transfer pays an HTTP round trip and a commit (its
      // batch's), a history page an HTTP round trip and a read.
      if (transferRate) {
        await scenario('http floor', 'baseline', { url: baselineUrl, kind: 'transfer', connections: transferClients, rate: transferRate, actorsFile, pathPrefix: '/ceiling' });
        // As many connections as the service's pool has.
        const poolSize = loadConfig(serviceEnv).config.databasePoolSize;
        await scenario('commit floor', 'postgres', { databaseUrl, kind: 'commit', connections: poolSize, rate: transferRate });
      }
      if (historyRate) await scenario('read floor', 'postgres', { databaseUrl, kind: 'read', connections: HISTORY_CLIENTS, rate: historyRate });
    }

    console.log(`vacuumed and checkpointed before the scenarios in ${settledMs} ms in all`);
    t0 = Date.now();
    const full = await reconcile(db);
    console.log(`full reconciliation: ${full.ok ? 'ok' : 'FAILED'} (${full.checked_accounts} accounts, ${full.checked_transactions} transactions, ${Date.now() - t0} ms)`);
    await db.end();

    const best = (scenarioName: string, server: string) =>
      Math.max(0, ...rows.filter((r) => r.scenario === scenarioName && r.server === server).map((r) => r.throughput));
    const summary = {
      uniform_peak: best('p2p uniform', 'service'),
      uniform_baseline_peak: best('p2p uniform', 'baseline'),
      uniform_vs_baseline: +(best('p2p uniform', 'service') / Math.max(1, best('p2p uniform', 'baseline'))).toFixed(2),
      hot_peak: best('hot merchant', 'service'),
      hot_baseline_peak: best('hot merchant', 'baseline'),
      hot_vs_baseline: +(best('hot merchant', 'service') / Math.max(1, best('hot merchant', 'baseline'))).toFixed(2),
      hot_vs_uniform: +(best('hot merchant', 'service') / Math.max(1, best('p2p uniform', 'service'))).toFixed(2),
      http_ceiling_peak: best('http ceiling', 'baseline'),
      uniform_vs_http_ceiling: +(best('p2p uniform', 'service') / Math.max(1, best('http ceiling', 'baseline'))).toFixed(2),
      in_process_peak: best('p2p uniform', 'in-process'),
      p99_at_half_peak_ms: rows.find((r) => r.scenario === 'p2p at half peak')?.p99,
      history_peak: best('history 1M entries', 'service'),
      history_p99_ms: rows.find((r) => r.scenario === 'history at half peak')?.p99,
      history_p99_saturated_ms: rows.find((r) => r.scenario === 'history 1M entries')?.p99,
      http_floor_p99_ms: rows.find((r) => r.scenario === 'http floor')?.p99,
      commit_floor_p99_ms: rows.find((r) => r.scenario === 'commit floor')?.p99,
      read_floor_p99_ms: rows.find((r) => r.scenario === 'read floor')?.p99,
      invariant_violations: rows.filter((r) => r.invariants !== 'ok').length + (full.ok ? 0 : full.mismatches.length),
    };
    console.log(JSON.stringify(summary, null, 2));

    mkdirSync('bench/results', { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const report = { machine: { cores: cpus().length, memory_gib: Math.round(totalmem() / 2 ** 30), cpu: cpus()[0]?.model }, settings, summary, rows, reconciliation: full };
    writeFileSync(`bench/results/bench-${stamp}.json`, JSON.stringify(report, null, 2));
    writeFileSync('bench/results/latest.json', JSON.stringify(report, null, 2));
    const series = (name: string, scenarioName: string, server: string, color: string) => ({
      name,
      color,
      points: rows.filter((r) => r.scenario === scenarioName && r.server === server && !r.rate).map((r) => ({ x: r.connections, y: r.throughput })),
    });
    writeFileSync(
      'bench/results/throughput.svg',
      lineChart(
        'Transfers per second vs concurrent clients',
        [
          series('service, uniform P2P', 'p2p uniform', 'service', '#1f77b4'),
          series('service, hot merchant', 'hot merchant', 'service', '#2ca02c'),
          series('baseline, uniform P2P', 'p2p uniform', 'baseline', '#ff7f0e'),
          series('baseline, hot merchant', 'hot merchant', 'baseline', '#d62728'),
          series('ledger alone, uniform (no HTTP)', 'p2p uniform', 'in-process', '#9467bd'),
          series('HTTP alone (no database)', 'http ceiling', 'baseline', '#7f7f7f'),
        ],
        'concurrent clients',
        'successful transfers / s',
      ),
    );
    console.log('wrote bench/results/latest.json and bench/results/throughput.svg');
    if (summary.invariant_violations > 0) {
      console.error(`LEDGER INVARIANTS VIOLATED: ${summary.invariant_violations}`);
      return 1;
    }
    // Every request of the bench is one the service must accept (funded wallets, limits far
    // above the load): any other answer is a fault, whatever the throughput.
    const failed = rows.filter((r) => r.errors > 0);
    if (failed.length > 0) {
      for (const r of failed) console.error(`${r.scenario} (${r.server}, c=${r.connections}): ${r.errors} failed requests ${JSON.stringify(r.statuses)}`);
      return 1;
    }
    rmSync(work, { recursive: true, force: true });
    return 0;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
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
