"""The load generators: wrk with bench/lua's scripts, and pgbench with bench/pgbench.

Each run returns a `Load`: what was answered (2xx and otherwise), the latency percentiles
and the CPU the load generator itself used (its rusage, from wait4), so every row shows that
the generator stayed cheap.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from walletsite import embedded_pg

LUA_DIR = Path(__file__).resolve().parent / "lua"
PGBENCH_SCRIPT = Path(__file__).resolve().parent / "pgbench" / "transfer.sql"
PERCENTILES = (50, 90, 99, 99.9)


@dataclass
class Load:
    duration_s: float
    ok: int
    not_ok: int
    statuses: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]
    loadgen_cpu_s: float
    first_error: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.not_ok + sum(self.errors.values())


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str, float]:
    """Run to the end; (exit code, stdout, stderr, CPU seconds it used)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_utime + usage.ru_stime


def percentiles_from_histogram(hist: dict[int, int], buckets_per_e: int) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in ms from common.lua's log buckets (each bucket's geometric
    middle; 2% wide)."""
    total = sum(hist.values())
    if total == 0:
        return {}
    ordered = sorted(hist.items())
    out = {}
    for p in PERCENTILES:
        rank, seen = math.ceil(total * p / 100), 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                out[f"p{p:g}"] = round(math.exp((bucket + 0.5) / buckets_per_e) / 1000, 3)
                break
    out["max"] = round(math.exp((ordered[-1][0] + 1) / buckets_per_e) / 1000, 3)
    return out


def wrk(
    *,
    url: str,
    script: str,
    options: dict[str, str],
    duration: int,
    connections: int,
    threads: int,
    timeout_s: int = 60,
) -> Load:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s"]
    args += ["-s", str(LUA_DIR / script), url, "--", f"threads={threads}"]
    args += [f"{key}={value}" for key, value in options.items()]
    env = dict(os.environ, LUA_PATH=f"{LUA_DIR}/?.lua;;")
    code, out, err, cpu = _run(args, env=env)
    line = next((line for line in out.splitlines() if line.startswith("BENCH_JSON ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {code}): {err.strip() or out.strip()}")
    report = json.loads(line.removeprefix("BENCH_JSON "))
    statuses = {str(k): int(v) for k, v in report["statuses"].items()}
    errors = {k: int(v) for k, v in report["errors"].items() if k != "status"}
    errors["untagged"] = int(report["untagged"])
    return Load(
        duration_s=report["duration_us"] / 1e6,
        ok=sum(count for status, count in statuses.items() if status.startswith("2")),
        not_ok=sum(count for status, count in statuses.items() if not status.startswith("2")),
        statuses=statuses,
        errors=errors,
        latency_ms=percentiles_from_histogram(
            {int(k): int(v) for k, v in report["hist"].items()}, report["buckets_per_e"]
        ),
        loadgen_cpu_s=cpu,
        first_error=report["first_error"],
        extra={"latency_samples": int(report["counted"])},
    )


def pgbench(
    *, socket_dir: Path, database: str, duration: int, clients: int, threads: int, variables: dict[str, int]
) -> Load:
    """The transfer's SQL under pgbench; latencies from its per-transaction log."""
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as logs:
        args = [embedded_pg.binary("pgbench"), "-n", "-M", "prepared", "-f", str(PGBENCH_SCRIPT)]
        args += [f"-c{clients}", f"-j{threads}", f"-T{duration}", "-l", f"--log-prefix={logs}/tx"]
        args += [f"-D{name}={value}" for name, value in variables.items()]
        args += ["-h", str(socket_dir), "-p", str(embedded_pg.PORT), "-U", "postgres", database]
        code, out, err, cpu = _run(args, cwd=Path(logs))
        if code != 0:
            raise RuntimeError(f"pgbench failed (exit {code}): {err.strip()[-2000:]}")
        latencies = []
        for log in Path(logs).iterdir():
            # client_id transaction_no time_us script_no epoch epoch_us
            latencies += [int(line.split()[2]) for line in log.read_text().splitlines() if line]
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    measured = float(re.search(r"duration: (\d+) s", out).group(1))
    latencies.sort()
    latency_ms = {}
    if latencies:
        for p in PERCENTILES:
            latency_ms[f"p{p:g}"] = round(
                latencies[min(len(latencies) - 1, math.ceil(len(latencies) * p / 100) - 1)] / 1000, 3
            )
        latency_ms["max"] = round(latencies[-1] / 1000, 3)
    return Load(
        duration_s=measured,
        ok=processed,
        not_ok=0,
        statuses={"committed": processed},
        errors={"failed": int(failed.group(1)) if failed else 0},
        latency_ms=latency_ms,
        loadgen_cpu_s=cpu,
        extra={"latency_samples": len(latencies)},
    )
