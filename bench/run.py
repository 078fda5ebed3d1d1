"""`make bench` (`python -m bench.run`): the service and the textbook baseline under the same
load, alternating, in one run (README "Benchmark").

1. A fresh data directory (BENCH_DATA_DIR; with BENCH_REUSE=1, the service's data an earlier
   run of the same sizes seeded and left is kept, and only its logins are renewed). The
   service starts the way `make run` starts it (`python -m walletsite.serve`: embedded
   PostgreSQL 18 with fsync on, migrations, gunicorn, the worker); the baseline
   (bench/baseline) gets its own database on that same server and its own gunicorn with the
   same gunicorn settings (walletsite/gunicorn_conf.py, WEB_CONCURRENCY x WEB_THREADS
   gthread), and so do the ceilings (bench/ceilings). With BENCH_SYNC5=1 the baseline also
   runs as the textbook deployment, 5 sync workers.
2. Both are seeded through their own code (bench/seed.py), the service's history wallet with
   BENCH_HISTORY_ENTRIES entries.
3. A contract check: on every transfer target, the same answers to the same requests (no key,
   a transfer, its replay, the key reused, a wrong PIN).
4. BENCH_ROUNDS rounds of the scenarios (BENCH_SCENARIOS); in each round every scenario runs
   on each of its targets in turn, the order rotating from round to round. After every row:
   wait until the servers and PostgreSQL are idle and the service's outbox is delivered, then
   check the invariants of both ledgers (`manage.py reconcile`, and the baseline's own
   `reconcile`). Any answer that is not 2xx, any socket error or timeout, any invariant broken
   fails the run.
5. Results (BENCH_OUTPUT, default docs/bench/results.json, or BENCH_DATA_DIR/results.json for
   a smoke run), the plot beside them (.svg) and, for a full run into docs/bench, the README's
   table.

How each number is measured is in the README's "Benchmark" section.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import load, procs, report
from bench.baseline.reconciliation import baseline_reconcile
from bench.seed import PIN
from walletsite import config as service_config
from walletsite import embedded_pg
from walletsite.serve import _port_free

ROOT = procs.ROOT
PY = sys.executable
MARKER = ".bench-data"
HISTORY_PATH = "/api/v1/wallet/transactions?limit=20"
# Idle: the servers, the worker and PostgreSQL used less than this share of one CPU over
# QUIET_SLICE_S, and the outbox is delivered.
QUIET_SHARE = 0.1
QUIET_SLICE_S = 0.5
QUIET_TIMEOUT_S = 120.0
# The longest an open-loop connection waits between two requests (see Run.connections).
OPEN_LOOP_IDLE_S = 2.5


class BenchFailed(Exception):
    """The run must fail: a non-2xx answer, a load generator error, a broken invariant."""


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # transfer, history, ceiling, pgbench
    targets: tuple[str, ...]
    description: str
    hot: bool = False
    open_of: str | None = None
    path: str = ""


SCENARIOS = (
    Scenario(
        "p2p",
        "transfer",
        ("service", "baseline", "baseline_bcrypt", "baseline_sync5"),
        "uniform P2P: a random wallet sends 1 to another random wallet, closed loop",
    ),
    Scenario(
        "hot_merchant",
        "transfer",
        ("service", "baseline"),
        "every request a random wallet sending 1 to the one merchant wallet, closed loop",
        hot=True,
    ),
    Scenario(
        "p2p_open",
        "transfer",
        ("service", "baseline"),
        "uniform P2P at half of the same target's p2p throughput in the same round, open loop",
        open_of="p2p",
    ),
    Scenario("history", "history", ("service",), "pages of 20 at random depths of the history wallet, closed loop"),
    Scenario(
        "history_open",
        "history",
        ("service",),
        "the same pages at half of the history throughput in the same round, open loop",
        open_of="history",
    ),
    Scenario("ceiling_bare", "ceiling", ("ceilings",), "a bare Django view, no middleware", path="/ceiling/bare"),
    Scenario(
        "ceiling_drf_jwt",
        "ceiling",
        ("ceilings",),
        "DRF + simplejwt's default JWTAuthentication (one user query), no write",
        path="/ceiling/drf-jwt",
    ),
    Scenario(
        "ceiling_drf_service_auth",
        "ceiling",
        ("ceilings",),
        "DRF + the service's AccessTokenAuthentication (user, wallet and login in one query), no write",
        path="/ceiling/drf-service-auth",
    ),
    Scenario("pgbench_uniform", "pgbench", ("postgres",), "the transfer's SQL under pgbench, random pairs"),
    Scenario(
        "pgbench_hot", "pgbench", ("postgres",), "the transfer's SQL under pgbench, every one to the merchant", hot=True
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclass(frozen=True)
class Target:
    name: str
    server: str | None
    ledger: str | None
    seeds: str = ""
    transfer_path: str = "/api/v1/wallet/transfer"


TARGETS = {
    "service": Target("service", "service", "service", "service"),
    "baseline": Target("baseline", "baseline", "baseline", "baseline"),
    "baseline_bcrypt": Target(
        "baseline_bcrypt", "baseline", "baseline", "baseline", "/bcrypt-pin/api/v1/wallet/transfer"
    ),
    "baseline_sync5": Target("baseline_sync5", "baseline_sync5", "baseline", "baseline"),
    "ceilings": Target("ceilings", "ceilings", None),
    "postgres": Target("postgres", None, "service"),
}
PORT_OFFSETS = {"service": 0, "baseline": 1, "ceilings": 2, "baseline_sync5": 3}


def _whole(env: dict[str, str], name: str, default: int, low: int = 1) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or int(raw) < low:
        raise SystemExit(f"bench: {name} must be a whole number of at least {low}, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Knobs:
    smoke: bool
    duration: int
    connections: int
    threads: int
    wallets: int
    history_entries: int
    rounds: int
    warmup: int
    reuse: bool
    scenarios: tuple[str, ...]
    sync5: bool
    port: int
    data_dir: Path
    output: Path
    readme: bool
    web_concurrency: int
    web_threads: int
    pgbench_clients: int

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Knobs:
        smoke = env.get("BENCH_SMOKE", "") not in ("", "0")
        names = env.get("BENCH_SCENARIOS", "").replace(" ", "")
        scenarios = tuple(n for n in names.split(",") if n) or tuple(s.name for s in SCENARIOS)
        unknown = [n for n in scenarios if n not in BY_NAME]
        if unknown:
            raise SystemExit(f"bench: unknown BENCH_SCENARIOS {unknown}; choose from {', '.join(BY_NAME)}")
        for name in scenarios:
            needs = BY_NAME[name].open_of
            if needs and needs not in scenarios:
                raise SystemExit(f"bench: {name} runs at half of {needs}'s throughput; add {needs} to BENCH_SCENARIOS")
        # Apart, so that a smoke run leaves a full run's seeded data for BENCH_REUSE.
        data_dir = Path(env.get("BENCH_DATA_DIR") or ROOT / ".data" / ("bench-smoke" if smoke else "bench")).resolve()
        default_output = data_dir / "results.json" if smoke else ROOT / "docs" / "bench" / "results.json"
        output = Path(env.get("BENCH_OUTPUT") or default_output).resolve()
        web_concurrency = _whole(env, "WEB_CONCURRENCY", 2)
        web_threads = _whole(env, "WEB_THREADS", 32)
        return cls(
            smoke=smoke,
            duration=_whole(env, "BENCH_DURATION", 3 if smoke else 20),
            connections=_whole(env, "BENCH_CONNECTIONS", 8 if smoke else 64),
            threads=_whole(env, "BENCH_THREADS", 2),
            wallets=_whole(env, "BENCH_WALLETS", 40 if smoke else 1000, low=2),
            history_entries=_whole(env, "BENCH_HISTORY_ENTRIES", 2000 if smoke else 1_000_000, low=40),
            rounds=_whole(env, "BENCH_ROUNDS", 1 if smoke else 3),
            warmup=_whole(env, "BENCH_WARMUP", 1 if smoke else 5),
            reuse=env.get("BENCH_REUSE", "") not in ("", "0"),
            scenarios=scenarios,
            sync5=env.get("BENCH_SYNC5", "0" if smoke else "1") not in ("", "0"),
            port=_whole(env, "BENCH_PORT", 8600),
            data_dir=data_dir,
            output=output,
            readme=not smoke and output == (ROOT / "docs" / "bench" / "results.json").resolve(),
            web_concurrency=web_concurrency,
            web_threads=web_threads,
            # 16, as many as the servers' threads were before WEB_THREADS went to 32: with 2 x 32
            # the pgbench clients and the servers' pools together ran past PostgreSQL's 200
            # connections ("too many clients already").
            pgbench_clients=_whole(env, "BENCH_PGBENCH_CLIENTS", 16),
        )


_STARTED = time.monotonic()


def _say(message: str) -> None:
    print(f"bench [{time.monotonic() - _STARTED:5.0f} s]: {message}", file=sys.stderr, flush=True)


def _fresh_data_dir(path: Path) -> None:
    """Empty `path` for this run; refuse a non-empty directory that bench did not make."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise SystemExit(
                f"bench: {path} is not empty and is not a bench data directory; choose another BENCH_DATA_DIR"
            )
        # A PostgreSQL left running by a killed run holds the old data.
        embedded_pg.stop(path / "pg", mode="immediate")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by bench.run; emptied at the start of every run (unless BENCH_REUSE)\n")


class Run:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.run_id = uuid.uuid4().hex[:8]
        self.seeds = knobs.data_dir / "seeds"
        self.logs = knobs.data_dir / "logs"
        self.servers: dict[str, procs.Server] = {}
        self.pids: dict[str, int | None] = {}
        self.rows: list[dict] = []
        self.peaks: dict[tuple[int, str, str], float] = {}
        self.seeding: dict = {}
        self.contract: dict[str, str] = {}
        self.db: dict[str, psycopg.Connection] = {}
        self.started_load = procs.loadavg()
        # What the servers run is what the tree holds when they start.
        self.git_at_start = self.git()

    # -- environment and servers ---------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "DJANGO_ENV", "DJANGO_SETTINGS_MODULE", "HOST", "PORT", "PUBLIC_URL")
            and k not in ("ALLOWED_HOSTS", "PROMETHEUS_MULTIPROC_DIR")
        }
        env.update(
            DATA_DIR=str(self.knobs.data_dir),
            HOST="127.0.0.1",
            RATE_LIMITS="off",
            # The tokens seeded at the start must outlive the run.
            ACCESS_TOKEN_SECONDS="86400",  # noqa: S106 - a lifetime, not a secret
            WEB_CONCURRENCY=str(self.knobs.web_concurrency),
            WEB_THREADS=str(self.knobs.web_threads),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def url(self, server: str) -> str:
        return f"http://127.0.0.1:{self.knobs.port + PORT_OFFSETS[server]}"

    def start_gunicorn(self, name: str, settings: str, probe: str, extra: list[str] = ()) -> None:
        env = self.env(
            PORT=str(self.knobs.port + PORT_OFFSETS[name]),
            DJANGO_SETTINGS_MODULE=settings,
            PROMETHEUS_MULTIPROC_DIR=str(self.knobs.data_dir / f"prometheus-{name}"),
        )
        args = [PY, "-m", "gunicorn", "-c", str(ROOT / "walletsite" / "gunicorn_conf.py"), *extra]
        server = procs.Server(name, args, env, self.logs / f"{name}.log", self.url(name) + probe)
        self.servers[name] = server
        server.start()
        server.wait_ready()
        self.pids[name] = server.pid

    def reusable_seed(self) -> dict | None:
        """With BENCH_REUSE, the service seeded by an earlier run of the same sizes."""
        path = self.seeds / "service.json"
        if not self.knobs.reuse or not (self.knobs.data_dir / MARKER).exists() or not path.exists():
            return None
        seeded = json.loads(path.read_text())
        sizes = (seeded["wallets"], seeded["history_entries"])
        return seeded if sizes == (self.knobs.wallets, self.knobs.history_entries) else None

    def start(self) -> None:
        knobs = self.knobs
        # Another server on one of the ports would answer the readiness probes and take the load.
        busy = [
            port
            for port in (knobs.port + offset for offset in PORT_OFFSETS.values())
            if not _port_free("127.0.0.1", port)
        ]
        if busy:
            raise BenchFailed(f"ports {busy} are in use by another program; choose another BENCH_PORT")
        reused = self.reusable_seed()
        if reused is None:
            _fresh_data_dir(knobs.data_dir)
        self.seeds.mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        # Makes DATA_DIR/secrets.json once, before any server reads it.
        cfg = service_config.load(self.env())
        self.socket_dir = Path(cfg.database.host)

        _say(f"starting the service as `make run` does (port {knobs.port}; log {self.logs / 'service.log'})")
        service = procs.Server(
            "service",
            [PY, "-m", "walletsite.serve"],
            self.env(PORT=str(knobs.port)),
            self.logs / "service.log",
            self.url("service") + "/readyz",
        )
        self.servers["service"] = service
        service.start()
        service.wait_ready()
        deadline = time.monotonic() + 60
        while (
            service.child(b"run_worker") is None or service.child(b"gunicorn") is None
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.pids["service"] = service.child(b"gunicorn")
        self.pids["worker"] = service.child(b"run_worker")
        self.pids["postgres"] = int((knobs.data_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
        self.db["service"] = self.connect(embedded_pg.DATABASE)

        if reused is None:
            _say(f"seeding the service: {knobs.wallets} wallets, a history wallet of {knobs.history_entries:,} entries")
            self.seeding["service"] = self.seed("service", "walletsite.settings", knobs.wallets, knobs.history_entries)
            (self.seeds / "service.json").write_text(json.dumps(self.seeding["service"]))
        else:
            _say("BENCH_REUSE: the service as an earlier run seeded it (and left it); fresh logins only")
            logins = self.seed("service-tokens", "walletsite.settings")
            self.seeding["service"] = {**reused, "reused_from_an_earlier_run": True, "fresh_logins": logins}

        _say("the baseline: its database, migrations, seeds")
        with self.connect("postgres") as conn:
            # Always from scratch: it takes seconds.
            conn.execute('DROP DATABASE IF EXISTS "bench_baseline" WITH (FORCE)')
            conn.execute('CREATE DATABASE "bench_baseline"')
        started = time.monotonic()
        subprocess.run(
            [PY, "-m", "django", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env(DJANGO_SETTINGS_MODULE="bench.baseline.settings"),
            check=True,
        )
        migrate_s = round(time.monotonic() - started, 2)
        self.seeding["baseline"] = self.seed("baseline", "bench.baseline.settings", knobs.wallets)
        self.seeding["baseline"]["timings"]["migrate_s"] = migrate_s
        self.db["baseline"] = self.connect("bench_baseline")

        _say("starting the baseline and the ceilings with the same gunicorn settings")
        self.start_gunicorn("baseline", "bench.baseline.settings", "/api/v1/wallet/transfer")
        self.start_gunicorn("ceilings", "bench.ceilings.settings", "/ceiling/bare")
        if knobs.sync5:
            self.start_gunicorn(
                "baseline_sync5",
                "bench.baseline.settings",
                "/api/v1/wallet/transfer",
                ["--workers", "5", "--worker-class", "sync", "--threads", "1"],
            )

    def connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_dir), port=embedded_pg.PORT, user="postgres", dbname=database, autocommit=True
        )

    def seed(self, target: str, settings: str, *sizes: int) -> dict:
        started = time.monotonic()
        # Its progress and warnings go to the terminal; its one line of JSON comes back here.
        done = subprocess.run(
            [PY, "-m", "bench.seed", target, str(self.seeds), *map(str, sizes)],
            cwd=ROOT,
            env=self.env(DJANGO_SETTINGS_MODULE=settings),
            stdout=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            raise BenchFailed(f"seeding the {target} failed (exit {done.returncode}); see above")
        made = json.loads(done.stdout.strip().splitlines()[-1])
        made["total_s"] = round(time.monotonic() - started, 2)
        _say(f"seeded the {target} in {made['total_s']} s: {made['timings']}")
        return made

    def stop(self) -> None:
        for conn in self.db.values():
            conn.close()
        for name in reversed(list(self.servers)):
            self.servers[name].stop()

    # -- the contract check --------------------------------------------------------------

    def post(self, url: str, token: str, body: dict, key: str | None) -> tuple[int, dict, dict]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own URL
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def check_contract(self) -> None:
        """The same requests get the same answers from every transfer target."""
        item_fields = {
            *("id", "type", "direction", "amount", "currency", "balance_after"),
            *("status", "counterparty", "note", "created_at"),
        }
        for name in self.transfer_targets():
            target = TARGETS[name]
            (token, _), (_, to) = self.wallet_lines(target.seeds)[:2]
            url = self.url(target.server) + target.transfer_path
            body = {"to": to, "amount": 1, "pin": PIN, "note": "contract"}
            key = f"{self.run_id}-contract-{name}"
            checks = []
            status, _, answer = self.post(url, token, body, None)
            checks.append(
                (
                    "no key: 400 idempotency_key_required",
                    (status, answer.get("code")) == (400, "idempotency_key_required"),
                )
            )
            status, _, first = self.post(url, token, body, key)
            checks.append(("201 {transaction, balance}", status == 201 and set(first) == {"transaction", "balance"}))
            checks.append(("a history item", status == 201 and set(first["transaction"]) == item_fields))
            status, headers, again = self.post(url, token, body, key)
            replayed = headers.get("Idempotent-Replayed") == "true"
            checks.append(("replay: same answer, Idempotent-Replayed", status == 201 and again == first and replayed))
            status, _, answer = self.post(url, token, {**body, "amount": 2}, key)
            checks.append(("key reused: 422", (status, answer.get("code")) == (422, "idempotency_key_reused")))
            status, _, answer = self.post(url, token, {**body, "pin": "9753"}, key + "-pin")
            checks.append(("wrong PIN: 403 invalid_pin", (status, answer.get("code")) == (403, "invalid_pin")))
            status, _, _ = self.post(url, token, body, key + "-after")
            checks.append(("then the right PIN: 201", status == 201))
            failed = [label for label, ok in checks if not ok]
            if failed:
                raise BenchFailed(f"contract check of {name} failed: {failed}")
            self.contract[name] = "ok: " + "; ".join(label for label, _ in checks)
        self.check_invariants("contract check")

    # -- measuring -----------------------------------------------------------------------

    def transfer_targets(self) -> list[str]:
        names = [t for s in self.knobs.scenarios for t in BY_NAME[s].targets if BY_NAME[s].kind == "transfer"]
        return [n for n in dict.fromkeys(names) if n != "baseline_sync5" or self.knobs.sync5]

    def wallet_lines(self, seeds: str, kind: str = "wallets") -> list[tuple[str, str]]:
        lines = (self.seeds / f"{seeds}-{kind}.tsv").read_text().splitlines()
        return [tuple(line.split("\t")) for line in lines]

    def snapshot(self) -> dict:
        cpu = {name: procs.tree_cpu(pid) for name, pid in self.pids.items()}
        return {"cpu": cpu, "machine": procs.machine(), "load": procs.loadavg()}

    def scalar(self, ledger: str, sql: str) -> int:
        return int(self.db[ledger].execute(sql).fetchone()[0])

    def transfers_posted(self, ledger: str) -> int:
        if ledger == "service":
            return self.scalar("service", "SELECT count(*) FROM ledger_transaction WHERE type = 'transfer'")
        return self.scalar("baseline", "SELECT count(*) FROM baseline_transaction")

    def wait_quiet(self) -> tuple[float, bool]:
        """Until every server, the worker and PostgreSQL are idle and the outbox is delivered:
        (seconds waited, whether it timed out)."""
        started = time.monotonic()
        previous = sum(procs.tree_cpu(pid) for pid in self.pids.values())
        while True:
            time.sleep(QUIET_SLICE_S)
            now = sum(procs.tree_cpu(pid) for pid in self.pids.values())
            pending = self.scalar("service", "SELECT count(*) FROM ledger_outboxevent WHERE delivered_at IS NULL")
            waited = time.monotonic() - started
            if now - previous < QUIET_SHARE * QUIET_SLICE_S and pending == 0:
                return round(waited, 2), False
            if waited > QUIET_TIMEOUT_S:
                return round(waited, 2), True
            previous = now

    def connections(self, target: Target, rate: float | None) -> int:
        """BENCH_CONNECTIONS, with two exceptions. The bcrypt variant gets no more than the
        threads that can serve at once: at ~250 ms of CPU per request, more would only queue
        towards wrk's timeout. An open loop gets as many as keep each one sending at least every
        OPEN_LOOP_IDLE_S: a connection idle for longer than gunicorn's keep-alive (5 s) is closed
        by the server, and wrk counts the request it then writes into it as a read error."""
        connections = self.knobs.connections
        if target.name == "baseline_bcrypt":
            connections = min(connections, self.knobs.web_concurrency * self.knobs.web_threads)
        if rate:
            connections = min(connections, max(self.knobs.threads, math.ceil(rate * OPEN_LOOP_IDLE_S)))
        return connections

    def drive(
        self, scenario: Scenario, target: Target, rnd: int, rate: float | None, duration: int | None = None
    ) -> load.Load:
        knobs = self.knobs
        duration = duration or knobs.duration
        common = {"warmup": str(min(5, max(1, duration // 5))) if rate else "0", "rate": f"{rate or 0:.1f}"}
        wrk = {"duration": duration, "connections": self.connections(target, rate), "threads": knobs.threads}
        if scenario.kind == "transfer":
            merchant = self.wallet_lines(target.seeds, "merchant")[0][1] if scenario.hot else ""
            options = {
                "wallets": str(self.seeds / f"{target.seeds}-wallets.tsv"),
                "path": target.transfer_path,
                "pin": PIN,
                "key": f"{self.run_id}-{rnd}-{scenario.name}-{target.name}-",
                "recipient": merchant,
                **common,
            }
            return load.wrk(url=self.url(target.server), script="transfer.lua", options=options, **wrk)
        if scenario.kind == "history":
            options = {
                "path": HISTORY_PATH,
                "token": str(self.seeds / "service-history.tsv"),
                "pages": str(self.seeds / "service-history-cursors.txt"),
                **common,
            }
            return load.wrk(url=self.url("service"), script="get.lua", options=options, **wrk)
        if scenario.kind == "ceiling":
            token = "" if scenario.path == "/ceiling/bare" else str(self.seeds / "service-wallets.tsv")
            options = {"path": scenario.path, "token": token, **common}
            return load.wrk(url=self.url("ceilings"), script="get.lua", options=options, **wrk)
        seeded = self.seeding["service"]
        return load.pgbench(
            socket_dir=self.socket_dir,
            database=embedded_pg.DATABASE,
            duration=duration,
            clients=knobs.pgbench_clients,
            threads=knobs.threads,
            variables={
                "first": seeded["first_account_id"],
                "n": seeded["wallets"],
                "hot": int(scenario.hot),
                "merchant": seeded["merchant_account_id"],
            },
        )

    def warm_up(self) -> None:
        """A short unmeasured run on every server before the rounds: each gunicorn thread
        opens its database connections and each worker imports what its first requests need,
        which the first measured row would otherwise pay for."""
        seconds = self.knobs.warmup
        _say(f"warming up every server for {seconds} s")
        runs = [(BY_NAME["p2p"], TARGETS[name]) for name in ("service", "baseline", "baseline_sync5")]
        runs += [(BY_NAME["history"], TARGETS["service"])]
        runs += [(scenario, TARGETS["ceilings"]) for scenario in SCENARIOS if scenario.kind == "ceiling"]
        for scenario, target in runs:
            if target.server not in self.servers:
                continue
            measured = self.drive(scenario, target, 0, None, duration=seconds)
            if measured.failures:
                raise BenchFailed(f"warm-up {scenario.name} {target.name}: {measured.statuses} {measured.errors}")
        self.wait_quiet()
        self.check_invariants("warm-up")

    def worker_reconciliations(self, since: datetime) -> int:
        """Reconciliations the service's worker ran (every 300 s) since `since`: each is a few
        whole-table statements that the row's PostgreSQL CPU then includes."""
        row = self.db["service"].execute(
            "SELECT count(*) FROM ledger_reconciliationrun WHERE triggered_by = 'system:worker' AND started_at >= %s",
            [since],
        )
        return int(row.fetchone()[0])

    def run_row(self, rnd: int, scenario: Scenario, target: Target) -> dict:
        rate = None
        if scenario.open_of:
            rate = self.peaks[(rnd, scenario.open_of, target.name)] / 2
        counts = scenario.kind in ("transfer", "pgbench")
        self.wait_quiet()
        wall_start = datetime.now(UTC)
        posted_before = self.transfers_posted(target.ledger) if counts else 0
        before = self.snapshot()
        try:
            measured = self.drive(scenario, target, rnd, rate)
        except RuntimeError as exc:
            # A load generator that failed (wrk, pgbench): the run fails, keeping its rows.
            raise BenchFailed(f"{scenario.name} on {target.name}: {exc}") from exc
        at_end = self.snapshot()
        quiesce_s, timed_out = self.wait_quiet()
        after = self.snapshot()
        posted = self.transfers_posted(target.ledger) - posted_before if counts else None

        label = f"round {rnd} {scenario.name} {target.name}"
        if measured.failures:
            raise BenchFailed(
                f"{label}: {measured.not_ok} answers not 2xx {measured.statuses}, errors {measured.errors}; "
                f"first: {measured.first_error}"
            )
        # Every 2xx answer is a posted transfer, and nothing was posted that was not asked for
        # (at most one request per connection was still in flight when the load stopped).
        in_flight = self.knobs.pgbench_clients if scenario.kind == "pgbench" else self.connections(target, rate)
        if counts and not measured.ok <= posted <= measured.ok + in_flight:
            raise BenchFailed(f"{label}: {measured.ok} successful answers but {posted} transfers posted")

        requests = posted if counts else measured.ok

        def per_request(name: str) -> float | None:
            if name not in after["cpu"] or not requests:
                return None
            return round(1000 * (after["cpu"][name] - before["cpu"][name]) / requests, 3)

        window = at_end["machine"].total - before["machine"].total
        ours = sum(at_end["cpu"][n] - before["cpu"][n] for n in before["cpu"]) + measured.loadgen_cpu_s
        busy = at_end["machine"].busy - before["machine"].busy
        cpu = {"server": per_request(target.server) if target.server else None, "postgres": per_request("postgres")}
        if target.name == "service":
            cpu["worker"] = per_request("worker")
        cpu["loadgen"] = round(1000 * measured.loadgen_cpu_s / max(1, measured.ok + measured.not_ok), 4)
        row = {
            "round": rnd,
            "scenario": scenario.name,
            "target": target.name,
            "loop": "open" if rate else "closed",
            "load_generator": "pgbench" if scenario.kind == "pgbench" else "wrk",
            "connections": in_flight,
            "duration_s": round(measured.duration_s, 2),
            "rate_target_rps": round(rate, 1) if rate else None,
            "requests": measured.ok,
            "server_requests": requests,
            "throughput_rps": round(measured.ok / measured.duration_s, 1),
            "latency_ms": measured.latency_ms,
            "latency_samples": measured.extra.get("latency_samples"),
            "statuses": measured.statuses,
            "errors": measured.errors,
            "cpu_ms_per_request": cpu,
            "steal_pct": round(100 * (at_end["machine"].steal - before["machine"].steal) / window, 2),
            "machine_busy_pct": round(100 * busy / window, 1),
            "other_busy_pct": round(max(0.0, 100 * (busy - ours) / window), 1),
            "loadavg_1m": [before["load"], at_end["load"]],
            "quiesce_s": quiesce_s,
            "quiesce_timed_out": timed_out,
            "worker_reconciliations": self.worker_reconciliations(wall_start),
        }
        if not rate and scenario.name in {s.open_of for s in SCENARIOS if s.open_of}:
            self.peaks[(rnd, scenario.name, target.name)] = row["throughput_rps"]
        row["invariants"] = self.check_invariants(label)
        _say(
            f"{label}: {row['throughput_rps']}/s, p50 {row['latency_ms'].get('p50')} ms, "
            f"p99 {row['latency_ms'].get('p99')} ms, CPU ms/req {cpu}, steal {row['steal_pct']}%"
        )
        return row

    def check_invariants(self, label: str) -> dict[str, str]:
        """Both ledgers reconcile, or the run fails: the service's with its own command
        (`manage.py reconcile`, ledger.reconciliation), the baseline's with its checks."""
        done = subprocess.run(
            [PY, "manage.py", "reconcile", "--triggered-by", f"bench:{label}"[:255]],
            cwd=ROOT,
            env=self.env(DJANGO_SETTINGS_MODULE="walletsite.settings"),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchFailed(f"after {label}: the service's ledger does not reconcile:\n{done.stdout}{done.stderr}")
        summary, problems = baseline_reconcile(self.db["baseline"])
        if problems:
            raise BenchFailed(f"after {label}: the baseline's ledger does not reconcile:\n" + "\n".join(problems))
        return {"service": done.stdout.strip().splitlines()[0], "baseline": summary}

    def rounds(self) -> None:
        for rnd in range(1, self.knobs.rounds + 1):
            _say(f"round {rnd} of {self.knobs.rounds}")
            for name in self.knobs.scenarios:
                scenario = BY_NAME[name]
                targets = [t for t in scenario.targets if t != "baseline_sync5" or self.knobs.sync5]
                # Alternate who goes first from round to round.
                shift = (rnd - 1) % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    self.rows.append(self.run_row(rnd, scenario, TARGETS[target]))

    # -- results -------------------------------------------------------------------------

    def machine_info(self) -> dict:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
        )
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        postgres = self.db["service"].execute("SELECT version()").fetchone()[0]
        return {
            "cpus": os.cpu_count(),
            "cpu_model": model,
            "memory_mb": mem,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postgres": postgres,
            "wrk": wrk[0] if wrk else "",
        }

    def settings_info(self) -> dict:
        knobs = self.knobs
        show = {
            name: self.db["service"].execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "synchronous_commit")
        }
        return {
            "smoke": knobs.smoke,
            "rounds": knobs.rounds,
            "duration_s": knobs.duration,
            "connections": knobs.connections,
            "wrk_threads": knobs.threads,
            "wallets": knobs.wallets,
            "history_entries": knobs.history_entries,
            "reused_seed": bool(self.seeding.get("service", {}).get("reused_from_an_earlier_run")),
            "scenarios": list(knobs.scenarios),
            "gunicorn": f"gthread, {knobs.web_concurrency} workers x {knobs.web_threads} threads",
            "baseline_sync5": "5 sync workers, 1 thread each" if knobs.sync5 else None,
            "pgbench_clients": knobs.pgbench_clients,
            "postgres": show,
            "redis": bool(os.environ.get("REDIS_URL")),
            "scenario_descriptions": {s.name: s.description for s in SCENARIOS if s.name in knobs.scenarios},
        }

    @staticmethod
    def git() -> dict:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return {"commit": commit, "tracked_files_modified": bool(changed)}

    def results(self) -> dict:
        rows = self.rows
        mean = lambda key: round(sum(r[key] for r in rows) / len(rows), 2) if rows else None  # noqa: E731
        return {
            "schema": 1,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": self.git_at_start,
            "machine": self.machine_info(),
            "settings": self.settings_info(),
            "conditions": {
                "loadavg_1m_at_start": self.started_load,
                "loadavg_1m_at_end": procs.loadavg(),
                "steal_pct_mean": mean("steal_pct"),
                "steal_pct_max": max((r["steal_pct"] for r in rows), default=None),
                "other_busy_pct_mean": mean("other_busy_pct"),
                "rows_with_a_worker_reconciliation": sum(1 for r in rows if r["worker_reconciliations"]),
            },
            "seeding": self.seeding,
            "contract": self.contract,
            "rows": rows,
            "summary": report.summarize(rows),
        }

    def write(self) -> Path:
        results = self.results()
        output = self.knobs.output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        output.with_suffix(".svg").write_text(report.svg(results["summary"], subtitle=report.subtitle(results)))
        markdown = report.table(results["summary"])
        if self.knobs.readme and not report.readme_update(ROOT / "README.md", markdown):
            _say("README.md has no bench table markers; the table is printed below instead")
        print(markdown)
        return output


def _terminate(signum, frame) -> None:
    raise SystemExit(f"bench: stopped by signal {signum}")


def main() -> int:
    knobs = Knobs.from_env(dict(os.environ))
    if shutil.which("wrk") is None:
        _say("wrk is not installed: `make bench` installs Debian's wrk package, or run `apt-get install wrk`")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    run = Run(knobs)
    started = time.monotonic()
    try:
        run.start()
        run.check_contract()
        run.warm_up()
        run.rounds()
        output = run.write()
    except BenchFailed as exc:
        _say(f"FAILED: {exc}")
        if run.rows:
            failed = knobs.data_dir / "results-failed.json"
            failed.write_text(json.dumps({"error": str(exc), "rows": run.rows}, indent=1) + "\n")
            _say(f"the rows measured before the failure are in {failed}")
        return 1
    finally:
        run.stop()
    _say(f"done in {time.monotonic() - started:.0f} s: {output} and {output.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
