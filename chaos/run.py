"""`make chaos` (`python -m chaos.run`): random money traffic from many concurrent clients
while the service's processes are killed and PostgreSQL is restarted, then proof from the
database that no money was created, lost or moved twice. Prints what it did and every
violation found; exits 1 on any violation (0 when there is none, 2 when it could not run).

Knobs (environment variables; `make chaos` passes them through):

| CHAOS_OPS (20000)          | operations: one Idempotency-Key each |
| CHAOS_CRASHES (50)         | SIGKILLs: gunicorn workers, the gunicorn master, background workers |
| CHAOS_PG_RESTARTS (3)      | PostgreSQL restarts, fast and immediate shutdowns (at least one of each from 2) |
| CHAOS_CLIENTS (24)         | concurrent client threads |
| CHAOS_WORKERS (2)          | background workers (`manage.py run_worker`), each killed now and then |
| CHAOS_CUSTOMERS (24), CHAOS_MERCHANTS (3) | the parties |
| CHAOS_SEED (random)        | printed; the same seed makes the same operations and the same crash schedule |
| CHAOS_READY_LIMIT_S (15)   | the longest /readyz may take to answer 200 after a restart |
| CHAOS_ANSWER_LIMIT_S (180) | the longest a request may go without a definitive answer |
| CHAOS_DRAIN_LIMIT_S (1200) | the longest the bank, the worker and the outbox may take to settle at the end |
| CHAOS_PORT (8400)          | first port to try: the service, the bank and the receiver take three in a row |
| CHAOS_KEEP (0)             | 1 keeps the work directory (logs, data) even when the run passes |

The service runs with RATE_LIMITS=off (a 429 would only be retried), BANK_TIMEOUT_SECONDS=2
(the bank answers some payouts only after it), WITHDRAWAL_RECHECK_SECONDS=3 and
WITHDRAWAL_TIMEOUT_SECONDS=30 (recovery acts within the run), a merchant fee of 1.75 %, and
tokens that outlive the run.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chaos.bank import Bank
from chaos.net import Stats, Timers, Violations
from chaos.receiver import Receiver
from chaos.service import Service, service_env
from chaos.traffic import KINDS, Party, Traffic
from chaos.verify import backlog, connect, verify
from walletsite.serve import _port_free

BANK_TIMEOUT_SECONDS = 2
WEB_CONCURRENCY = 2
CRASH_KINDS = ("gunicorn_worker", "gunicorn_master", "background_worker")
CRASH_WEIGHTS = (40, 30, 30)
SERVICE_SETTINGS = {
    "RATE_LIMITS": "off",
    "LOG_LEVEL": "WARNING",
    "ACCESS_TOKEN_SECONDS": "86400",
    "MERCHANT_FEE_BPS": "175",
    "BANK_TIMEOUT_SECONDS": str(BANK_TIMEOUT_SECONDS),
    "BANK_BREAKER_COOLDOWN_SECONDS": "3",
    "WITHDRAWAL_RECHECK_SECONDS": "3",
    "WITHDRAWAL_TIMEOUT_SECONDS": "30",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "WEB_CONCURRENCY": str(WEB_CONCURRENCY),
    "GATEWAY_SANDBOX": "on",
}


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


@dataclass(frozen=True)
class Knobs:
    ops: int
    crashes: int
    pg_restarts: int
    clients: int
    workers: int
    customers: int
    merchants: int
    seed: int
    ready_limit: float
    answer_limit: float
    drain_limit: float
    port: int
    keep: bool

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Knobs:
        def number(name: str, default: int, low: int) -> int:
            raw = env.get(name, "").strip()
            if raw == "":
                return default
            if not raw.isdigit() or int(raw) < low:
                raise SystemExit(f"chaos: {name} must be a whole number of at least {low}, got {raw!r}")
            return int(raw)

        return cls(
            ops=number("CHAOS_OPS", 20_000, 1),
            crashes=number("CHAOS_CRASHES", 50, 0),
            pg_restarts=number("CHAOS_PG_RESTARTS", 3, 0),
            clients=number("CHAOS_CLIENTS", 24, 1),
            workers=number("CHAOS_WORKERS", 2, 1),
            customers=number("CHAOS_CUSTOMERS", 24, 2),
            merchants=number("CHAOS_MERCHANTS", 3, 1),
            seed=number("CHAOS_SEED", secrets.randbelow(10**9), 0),
            ready_limit=number("CHAOS_READY_LIMIT_S", 15, 1),
            answer_limit=number("CHAOS_ANSWER_LIMIT_S", 180, 10),
            drain_limit=number("CHAOS_DRAIN_LIMIT_S", 1200, 10),
            port=number("CHAOS_PORT", 8400, 1024),
            keep=env.get("CHAOS_KEEP", "") not in ("", "0"),
        )


def pick_ports(first: int) -> int:
    """The first of three free ports in a row from `first` on (within 100)."""
    for port in range(first, first + 98):
        if all(_port_free("127.0.0.1", p) for p in (port, port + 1, port + 2)):
            return port
    raise SystemExit(f"chaos: no three free ports in a row in {first}-{first + 99}")


def chaos_schedule(rng: random.Random, knobs: Knobs) -> list[tuple[int, str]]:
    """(after how many finished operations, what) for every crash and PostgreSQL restart,
    spread at random over the run. Every kind happens at least once when there are enough."""
    crashes = list(CRASH_KINDS[: min(3, knobs.crashes)])
    crashes += rng.choices(CRASH_KINDS, weights=CRASH_WEIGHTS, k=max(0, knobs.crashes - 3))
    modes = ["fast", "immediate"][: knobs.pg_restarts]
    modes += [rng.choice(["fast", "immediate"]) for _ in range(knobs.pg_restarts - len(modes))]
    events = crashes + [f"postgres_{mode}" for mode in modes]
    rng.shuffle(events)
    positions = sorted(int(rng.uniform(0.02, 0.95) * knobs.ops) for _ in events)
    return list(zip(positions, events, strict=True))


class Progress:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.finished = threading.Event()

    def add(self) -> None:
        with self.lock:
            self.done += 1

    def value(self) -> int:
        with self.lock:
            return self.done


class Monkey(threading.Thread):
    """Inflicts the scheduled crashes, each once the traffic got that far, one at a time."""

    def __init__(self, *, service: Service, schedule, progress: Progress, rng: random.Random, knobs: Knobs, t0: float):
        super().__init__(name="monkey", daemon=True)
        self.service = service
        self.schedule = schedule
        self.progress = progress
        self.rng = rng
        self.knobs = knobs
        self.t0 = t0
        self.after_traffic = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            events = list(self.schedule)
            number = 0
            while events:
                at, kind = events.pop(0)
                number += 1
                while self.progress.value() < at and not self.progress.finished.is_set():
                    time.sleep(0.05)
                if self.progress.finished.is_set():
                    self.after_traffic += 1
                time.sleep(self.rng.uniform(0, 0.3))
                done = self.progress.value()
                if kind.startswith("postgres_"):
                    # Sometimes the next crash comes while PostgreSQL is down.
                    during = None
                    if events and not events[0][1].startswith("postgres_") and self.rng.random() < 0.5:
                        during = events.pop(0)[1]
                        number += 1
                    recovery = self.service.restart_postgres(
                        kind.removeprefix("postgres_"), self.rng.uniform(0.5, 3.0), rng=self.rng, crash=during
                    )
                else:
                    recovery = self.service.crash_and_recover(kind, self.rng)
                say(
                    f"[{done}/{self.knobs.ops} ops, {time.monotonic() - self.t0:.0f} s] {number}/{len(self.schedule)}: "
                    f"{recovery.what} ({recovery.detail}): /readyz 200 after {recovery.seconds:.1f} s, "
                    f"all gunicorn workers after {recovery.full_seconds:.1f} s"
                )
        except BaseException as exc:
            self.error = exc


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class Run:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.stats = Stats()
        self.violations = Violations()
        self.rng = random.Random(knobs.seed)
        self.times: dict[str, float] = {}

    def main(self) -> int:
        knobs = self.knobs
        t0 = time.monotonic()
        port = pick_ports(knobs.port)
        work = Path(tempfile.mkdtemp(prefix="wallet-chaos-"))
        say(
            f"seed {knobs.seed}: {knobs.ops} operations from {knobs.clients} clients, {knobs.customers} customers and "
            f"{knobs.merchants} merchants, {knobs.workers} background workers; {knobs.crashes} crashes, "
            f"{knobs.pg_restarts} PostgreSQL restarts; "
            f"service on port {port}, bank {port + 1}, webhook receiver {port + 2}; work directory {work}"
        )
        keys = {name: secrets.token_urlsafe(48) for name in ("JWT_SIGNING_KEY", "PIN_PEPPER")}
        keys["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(60)
        keys["GATEWAY_WEBHOOK_SECRET"] = secrets.token_urlsafe(48)
        keys["BANK_WEBHOOK_SECRET"] = secrets.token_urlsafe(48)
        bank = Bank(
            port=port + 1,
            service_port=port,
            secret=keys["BANK_WEBHOOK_SECRET"],
            seed=knobs.seed,
            late_seconds=BANK_TIMEOUT_SECONDS + 1.5,
            stats=self.stats,
            violations=self.violations,
            answer_limit_seconds=knobs.answer_limit,
        )
        receiver = Receiver(port=port + 2, seed=knobs.seed, stats=self.stats, violations=self.violations)
        env = service_env(work=work, port=port, bank_url=bank.url, secrets=keys, extra=SERVICE_SETTINGS)
        service = Service(
            work=work,
            env=env,
            port=port,
            web_concurrency=WEB_CONCURRENCY,
            workers=knobs.workers,
            ready_limit=knobs.ready_limit,
            stats=self.stats,
            violations=self.violations,
        )
        late = Timers(threads=4, name="late")
        traffic = Traffic(
            port=port,
            seed=knobs.seed,
            stats=self.stats,
            violations=self.violations,
            timers=late,
            gateway_secret=keys["GATEWAY_WEBHOOK_SECRET"],
            limit_seconds=knobs.answer_limit,
        )
        clean = False
        try:
            bank.start()
            receiver.start()
            service.start()
            self.times["start"] = time.monotonic() - t0
            parties = self.enrol(traffic, receiver)
            self.times["setup"] = time.monotonic() - t0 - self.times["start"]
            monkey, traffic_seconds = self.torture(service, traffic, receiver)
            self.times["traffic"] = traffic_seconds
            late.close(hurry=True)
            for error in late.errors + bank.timers.errors:
                self.violations.add(f"the harness failed: {error}")
            t_drain = time.monotonic()
            self.drain(service, bank)
            self.times["drain"] = time.monotonic() - t_drain
            t_verify = time.monotonic()
            service.stop()
            for name, proc in (("gunicorn", service.web), *(("a worker", w) for w in service.workers)):
                if proc.returncode != 0:
                    self.violations.add(f"{name} exited {proc.returncode} on SIGTERM after the run, not 0")
            reconciled = service.manage("reconcile", "--triggered-by", "chaos")
            if reconciled.returncode != 0:
                self.violations.add(f"manage.py reconcile failed:\n{reconciled.stdout}{reconciled.stderr}")
            with connect(service.pgdata) as conn:
                summary = verify(
                    conn,
                    book=traffic.book,
                    parties=parties,
                    bank=bank.truth(),
                    received=receiver.received()[0],
                    violations=self.violations,
                )
            twice = bank.settled_more_than_once()
            if twice:
                self.violations.add(f"{len(twice)} withdrawals settled by more than one bank callback: {twice[:5]}")
            self.times["verify"] = time.monotonic() - t_verify
            self.check_crashes(service, monkey)
            self.times["total"] = time.monotonic() - t0
            self.report(service, traffic, summary, reconciled.stdout.strip(), monkey)
            service.postgres_stop("fast")
            clean = True
        finally:
            if not clean:
                service.kill_everything()
            bank.stop()
            receiver.stop()
        if self.violations.count == 0 and not knobs.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs and data kept in {work}")
        return 1 if self.violations.count else 0

    def enrol(self, traffic: Traffic, receiver: Receiver) -> list[Party]:
        tag = f"{self.knobs.seed}.{secrets.token_hex(3)}"
        customers = [
            Party(f"c{i}", f"chaos-c{i}.{tag}@example.com", merchant=False) for i in range(self.knobs.customers)
        ]
        merchants = [
            Party(f"m{i}", f"chaos-m{i}.{tag}@example.com", merchant=True) for i in range(self.knobs.merchants)
        ]
        with ThreadPoolExecutor(max_workers=8) as pool:
            secrets_by_name = dict(
                zip(
                    [p.name for p in customers + merchants],
                    pool.map(lambda p: traffic.enrol(p, webhook_url=receiver.url(p.name)), customers + merchants),
                    strict=True,
                )
            )
        for merchant in merchants:
            receiver.register(merchant.name, secrets_by_name[merchant.name])
        traffic.customers, traffic.merchants = customers, merchants
        say(f"{len(customers)} customers and {len(merchants)} merchants registered")
        return customers + merchants

    def torture(self, service: Service, traffic: Traffic, receiver: Receiver) -> tuple[Monkey, float]:
        knobs = self.knobs
        progress = Progress()
        t0 = time.monotonic()
        schedule = chaos_schedule(random.Random(f"{knobs.seed}:schedule"), knobs)
        monkey = Monkey(
            service=service,
            schedule=schedule,
            progress=progress,
            rng=random.Random(f"{knobs.seed}:monkey"),
            knobs=knobs,
            t0=t0,
        )
        counter = itertools.count()

        def client_loop(number: int) -> None:
            client = traffic.client(random.Random(f"{knobs.seed}:client:{number}"))
            try:
                while (index := next(counter)) < knobs.ops:
                    try:
                        traffic.run(client, index)
                    except Exception as exc:
                        self.violations.add(f"operation {index}: unexpected {type(exc).__name__}: {exc}")
                    progress.add()
            finally:
                client.close()

        threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(knobs.clients)]
        monkey.start()
        for thread in threads:
            thread.start()
        next_report = time.monotonic() + 30
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.2)
            if time.monotonic() >= next_report:
                done = progress.value()
                elapsed = time.monotonic() - t0
                say(
                    f"[{done}/{knobs.ops} ops, {elapsed:.0f} s] {done / elapsed:.0f} ops/s, "
                    f"{self.stats.get('retries')} retries, {self.violations.count} violations so far"
                )
                next_report += 30
        progress.finished.set()
        receiver.refusing = False
        traffic_seconds = time.monotonic() - t0
        monkey.join()
        if monkey.error is not None:
            raise monkey.error
        say(f"traffic done: {knobs.ops} operations in {traffic_seconds:.0f} s")
        return monkey, traffic_seconds

    def drain(self, service: Service, bank: Bank) -> None:
        """Until the bank has settled every payout and delivered every callback, every
        withdrawal is settled, and the worker has delivered every event and webhook."""
        deadline = time.monotonic() + self.knobs.drain_limit
        next_report = time.monotonic() + 15
        with connect(service.pgdata) as conn:
            while True:
                left = backlog(conn)
                left.update(bank_processing=bank.unsettled(), bank_callbacks=int(bank.busy()))
                if not any(left.values()):
                    return
                if time.monotonic() > deadline:
                    self.violations.add(f"still not settled {self.knobs.drain_limit:.0f} s after the traffic: {left}")
                    return
                if time.monotonic() >= next_report:
                    say(f"draining: {left}")
                    next_report += 15
                time.sleep(0.5)

    def check_crashes(self, service: Service, monkey: Monkey) -> None:
        stats = self.stats
        crashes = sum(stats.get(f"crash_{kind}") for kind in CRASH_KINDS)
        restarts = stats.get("postgres_restart_fast") + stats.get("postgres_restart_immediate")
        if crashes < self.knobs.crashes or restarts < self.knobs.pg_restarts:
            self.violations.add(
                f"{crashes} crashes and {restarts} PostgreSQL restarts happened, "
                f"{self.knobs.crashes} and {self.knobs.pg_restarts} were asked for"
            )

    def report(self, service: Service, traffic: Traffic, summary: dict, reconciled: str, monkey: Monkey) -> None:
        s = self.stats.snapshot()
        g = s.get

        def counts(prefix: str) -> str:
            found = {k.removeprefix(prefix): v for k, v in sorted(s.items()) if k.startswith(prefix)}
            return ", ".join(f"{k} {v}" for k, v in found.items()) or "none"

        ready = [r.seconds for r in service.recoveries]
        full = [r.full_seconds for r in service.recoveries]
        lag = ", ".join(f"{k} {v:.1f} s" for k, v in summary.get("outbox_lag_seconds", {}).items())
        by_kind = ", ".join(f"{k} {g('op_' + k, 0)}" for k in KINDS)
        lines = [
            f"seed {self.knobs.seed}",
            f"operations: {sum(g('op_' + k, 0) for k in KINDS)} ({by_kind})",
            f"answers: 2xx {g('answered_2xx', 0)}, 4xx {g('answered_4xx', 0)}, no definitive answer "
            f"{traffic.book.unanswered}",
            f"answers by kind: {counts('answer_')}",
            f"http: {g('http_requests', 0)} requests, {g('retries', 0)} retries ({g('no_answer', 0)} without an "
            f"answer; not yet: {counts('not_yet_')}), {g('replayed_answers', 0)} replayed answers",
            f"idempotency: {g('raced_keys', 0)} keys raced from 2-3 connections, {g('late_retries', 0)} retried late, "
            f"{g('keys_reused_with_another_body', 0)} reused with another body",
            f"gateway webhooks: {g('gateway_webhooks', 0)} sent ({g('gateway_webhook_duplicates', 0)} concurrent "
            f"copies, {g('gateway_failure_before_success', 0)} failures before the success, "
            f"{g('gateway_success_again_new_id', 0)} successes again under a new id, "
            f"{g('gateway_failure_after_success', 0)} contradicting failures, {g('gateway_stale_redelivery', 0)} "
            f"stale redeliveries, {g('gateway_wrong_amount', 0)} wrong amounts), "
            f"{g('payments_never_paid', 0)} payments never paid",
            f"bank: {g('bank_payouts', 0)} payouts, {g('bank_submissions', 0)} submissions "
            f"({g('bank_resubmissions', 0)} repeats answered with the first), "
            f"{g('bank_timeouts_after_taking', 0)} timeouts after taking a payout, {g('bank_5xx_after_taking', 0)} "
            f"5xx and {g('bank_dropped_after_taking', 0)} dropped connections after taking one, "
            f"{g('bank_refused_before_taking', 0)} refused (503) before taking one; settled "
            f"{g('bank_settled_succeeded', 0)} paid, {g('bank_settled_failed', 0)} rejected "
            f"({g('bank_settled_silently', 0)} without a callback), {g('bank_cancelled', 0)} cancelled by the service; "
            f"{g('bank_status_checks', 0)} status checks ({g('bank_status_timeouts', 0)} answered too late)",
            f"bank callbacks: {g('bank_callbacks_sent', 0)} sent ({g('bank_callbacks_duplicated', 0)} concurrent "
            f"copies, {g('bank_callbacks_again_new_id', 0)} again under a new id, "
            f"{g('bank_callbacks_contradicting', 0)} contradicting, {g('bank_callbacks_stale', 0)} stale, "
            f"{g('bank_callbacks_wrong_amount', 0)} wrong amounts)",
            f"merchant webhooks: {summary.get('webhook_deliveries')} deliveries, {g('webhooks_received', 0)} received "
            f"({summary.get('webhooks_received_more_than_once')} ids more than once), {g('webhooks_refused_once', 0)} "
            "refused once by the receiver",
            f"crashes: {sum(g('crash_' + k, 0) for k in CRASH_KINDS)} "
            f"(gunicorn worker {g('crash_gunicorn_worker', 0)}, "
            f"gunicorn master {g('crash_gunicorn_master', 0)} [{g('crash_gunicorn_master_with_workers', 0)} with its "
            f"workers, {g('crash_gunicorn_master_alone', 0)} alone], background workers "
            f"{g('crash_background_worker', 0)}); PostgreSQL restarts: "
            f"{g('postgres_restart_fast', 0) + g('postgres_restart_immediate', 0)} "
            f"(fast {g('postgres_restart_fast', 0)}, "
            f"immediate {g('postgres_restart_immediate', 0)}); {monkey.after_traffic} after the traffic ended",
            f"readiness after a restart: max {max(ready, default=0):.1f} s, median "
            f"{statistics.median(ready) if ready else 0:.1f} s (limit {self.knobs.ready_limit:.0f} s); all gunicorn "
            f"workers again: max {max(full, default=0):.1f} s, median {statistics.median(full) if full else 0:.1f} s",
            f"ledger: {summary.get('accounts')} accounts, {summary.get('transactions')} transactions "
            f"{summary.get('transactions_by_type')}, total balance {summary.get('total_balance')}; "
            f"{summary.get('idempotency_keys')} idempotency keys; {summary.get('outbox_events')} outbox events "
            f"(from commit to delivery: {lag}); "
            f"withdrawals {summary.get('withdrawals_succeeded')} paid, {summary.get('withdrawals_failed')} released; "
            f"flagged for review: {summary.get('flagged_payment_attempts')} payment attempts, "
            f"{summary.get('flagged_withdrawals')} withdrawals",
            f"reconcile: {reconciled.splitlines()[0] if reconciled else '?'}",
            "times: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.times.items()),
            f"violations: {self.violations.count}",
        ]
        print("\n".join(["", "== chaos summary", *lines]), flush=True)
        for message in self.violations.messages:
            print(f"  VIOLATION: {message}", flush=True)
        if self.violations.count > len(self.violations.messages):
            print(f"  ... and {self.violations.count - len(self.violations.messages)} more", flush=True)


def main() -> int:
    knobs = Knobs.from_env(dict(os.environ))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return Run(knobs).main()
    except KeyboardInterrupt:
        say("interrupted")
        return 2
    except Exception:
        traceback.print_exc()
        say("the harness itself failed; this is no verdict on the service")
        return 2


if __name__ == "__main__":
    sys.exit(main())
