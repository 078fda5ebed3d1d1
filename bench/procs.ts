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

/** CPU time the hypervisor gave to other guests while this machine's processes wanted it, in ticks, all cores together. */
function stealTicks(): number {
  try {
    // "cpu  user nice system idle iowait irq softirq steal ...": steal is the 8th number.
    return Number(readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/)[8] ?? 0);
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
  /**
   * CPU time this virtual machine's cores waited for while the hypervisor ran other guests
   * (steal), in cores. Latency tails grow with it: a stolen core stalls whatever ran on it.
   */
  stealCpu: number;
  servicePeakRssMb: number;
}

/**
 * Samples CPU time and memory of the service, the load driver and PostgreSQL while a
 * scenario runs. A process already running at the start counts from there; one that starts
 * during the scenario (the driver) counts from its start, and is sampled while it runs
 * because it may have exited by the end.
 */
export function sampleUsage(servicePid: () => number | undefined, loadPid: () => number | undefined): { stop: () => Usage } {
  const started = performance.now();
  const stealAtStart = stealTicks();
  const baseline = new Map<number, number>();
  const latest = new Map<number, number>();
  const track = (pid: number | undefined, atStart = false) => {
    if (pid === undefined) return;
    const ticks = cpuTicks(pid);
    if (!baseline.has(pid)) baseline.set(pid, atStart ? ticks : 0);
    latest.set(pid, Math.max(latest.get(pid) ?? 0, ticks));
  };
  const used = (pid: number | undefined) => (pid === undefined ? 0 : Math.max(0, (latest.get(pid) ?? 0) - (baseline.get(pid) ?? 0)));
  track(servicePid(), true);
  for (const p of postgresPids()) track(p, true);
  let peak = 0;
  const sample = () => {
    const pid = servicePid();
    track(pid);
    if (pid !== undefined) peak = Math.max(peak, rssKb(pid));
    track(loadPid());
    for (const p of postgresPids()) track(p);
  };
  const timer = setInterval(sample, 100);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      const seconds = (performance.now() - started) / 1000;
      const service = servicePid();
      const load = loadPid();
      const pg = [...latest.keys()].filter((p) => p !== service && p !== load).reduce((sum, p) => sum + used(p), 0);
      return {
        serviceCpu: +(used(service) / TICKS_PER_SECOND / seconds).toFixed(2),
        postgresCpu: +(pg / TICKS_PER_SECOND / seconds).toFixed(2),
        loadCpu: +(used(load) / TICKS_PER_SECOND / seconds).toFixed(2),
        stealCpu: +((stealTicks() - stealAtStart) / TICKS_PER_SECOND / seconds).toFixed(2),
        servicePeakRssMb: Math.round(peak / 1024),
      };
    },
  };
}
