import { readFileSync, readdirSync } from 'node:fs';

const TICKS_PER_SECOND = 100;

function cpuTicks(pid: number): number {
  try {
    // Fields after the command name (which may contain spaces) start at index 2: utime is 14th, stime 15th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Every PostgreSQL server process on this machine (the embedded one runs as `postgres`). */
export function postgresPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      if (comm === 'postgres' || comm.startsWith('postgres')) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

export interface Usage {
  /** CPU time used per wall second, in cores (1.0 = one core busy). */
  serviceCpu: number;
  postgresCpu: number;
  /** The load generator's share: on 2 cores it competes with what it measures. */
  loadCpu: number;
  servicePeakRssMb: number;
}

/** Samples CPU time and memory of the service and of PostgreSQL while a scenario runs. */
export function sampleUsage(servicePid: number, loadPid: () => number | undefined): { stop: () => Usage } {
  const started = performance.now();
  const service0 = cpuTicks(servicePid);
  let loadTicks = 0;
  const pg0 = new Map(postgresPids().map((p) => [p, cpuTicks(p)]));
  let peak = rssKb(servicePid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssKb(servicePid));
    const pid = loadPid();
    if (pid) loadTicks = Math.max(loadTicks, cpuTicks(pid));
    for (const p of postgresPids()) if (!pg0.has(p)) pg0.set(p, 0);
  }, 100);
  return {
    stop: () => {
      clearInterval(timer);
      const seconds = (performance.now() - started) / 1000;
      const service = (cpuTicks(servicePid) - service0) / TICKS_PER_SECOND;
      let pg = 0;
      for (const [p, t0] of pg0) pg += Math.max(0, cpuTicks(p) - t0);
      return {
        serviceCpu: +(service / seconds).toFixed(2),
        postgresCpu: +(pg / TICKS_PER_SECOND / seconds).toFixed(2),
        loadCpu: +(loadTicks / TICKS_PER_SECOND / seconds).toFixed(2),
        servicePeakRssMb: Math.round(Math.max(peak, rssKb(servicePid)) / 1024),
      };
    },
  };
}
