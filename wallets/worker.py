"""The background worker (`manage.py run_worker`): delivers outbox events and runs the
periodic jobs.

One loop, one thread, one step at a time: a step is a batch of outbox deliveries or one
periodic job. A batch goes through its handlers together (wallets.events: the events that
share their handlers share each handler call), and is marked delivered in one statement.
SIGTERM or SIGINT asks the loop to stop; the step in progress finishes (the events of a batch
not yet started, those whose handlers differ from the ones running, are handed back at
once), then the process exits 0.

Any number of workers may run: outbox claims skip each other's rows, and each periodic job
runs under a PostgreSQL advisory lock, so two workers never run the same job at once (the
second skips it until its next turn).

When the database is unreachable, the loop logs it, waits (1 s, doubling up to 30 s) and
tries again instead of exiting, so a database restart does not need a worker restart.
"""

from __future__ import annotations

import importlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import InterfaceError, OperationalError, close_old_connections, connection

from ledger.models import OutboxEvent
from ledger.outbox import outbox_claim, outbox_mark_delivered, outbox_mark_failed, outbox_release, outbox_retry_delay
from wallets.events import DeliveryOutcome, events_deliver
from walletsite import metrics

logger = logging.getLogger("wallets.worker")

# Events per claim. The handlers take them together, so a bigger batch costs less per event;
# but the whole batch must finish well within its lease (an email is sent after another).
BATCH_SIZE = 50
# How long a claim holds its events. A handler that talks to the outside world (merchant
# webhooks) must time out well before this, or a second worker may deliver the same event
# while the first is still at it.
LEASE_SECONDS = 60
# With nothing to deliver, look again this often: the longest an event waits for delivery.
IDLE_SECONDS = 0.5
# Payment attempts expire at their expires_at; this is how late the status may change.
EXPIRE_INTERVAL_SECONDS = 30
# A full reconciliation of the ledger (a few whole-table statements) this often.
RECONCILIATION_INTERVAL_SECONDS = 300
# Merchant webhooks due for (re)delivery are looked for this often (wallets.notifications).
WEBHOOK_INTERVAL_SECONDS = 1
# Pending withdrawals are sent to the bank this often; recovery asks the bank about payouts
# in flight too long this often (wallets.withdrawals).
WITHDRAWAL_SUBMIT_INTERVAL_SECONDS = 1
WITHDRAWAL_RECOVERY_INTERVAL_SECONDS = 15
# Idempotency keys past their retention window are deleted this often (wallets.retention).
IDEMPOTENCY_PURGE_INTERVAL_SECONDS = 3600
# Ended rate-limit windows are deleted from PostgreSQL this often (walletsite.throttles); the
# table holds a row per key seen since, so it stays small whatever the traffic.
THROTTLE_PURGE_INTERVAL_SECONDS = 300
DATABASE_RETRY_MAX_SECONDS = 30
# How often a sleeping loop checks whether it was asked to stop.
_SLICE_SECONDS = 0.1


@dataclass
class PeriodicJob:
    name: str
    interval_seconds: float
    run: Callable[[], object]
    next_due: float = field(default=0.0, compare=False)


def _lazy(module: str, function: str) -> Callable[..., object]:
    """The function, imported when the job first runs: the worker starts, and delivers
    events, even while a job's module is missing or broken (the job logs why it cannot run)."""
    return getattr(importlib.import_module(module), function)


def job_expire_payment_attempts() -> object:
    expired = _lazy("wallets.topups", "payment_attempts_expire")()
    if expired:
        logger.info("payment attempts expired", extra={"count": expired})
    return expired


def job_reconcile() -> object:
    # reconciliation_run stores the run, sets the mismatch gauge and the runs counter, and
    # logs an error line when the ledger disagrees with itself: nothing to add here.
    return _lazy("ledger.reconciliation", "reconciliation_run")(triggered_by="system:worker")


def job_deliver_webhooks() -> object:
    # Posts merchant webhooks outside any transaction; a run is bounded by its time budget.
    return _lazy("wallets.notifications", "webhook_deliveries_run")()


def job_submit_withdrawals() -> object:
    # Calls the bank over HTTP with no row locked; stops while the bank's breaker is open.
    run = _lazy("wallets.withdrawals", "withdrawals_submit")()
    if run.results:
        logger.info("withdrawal payouts sent", extra={"results": run.results})
    return run


def job_recover_withdrawals() -> object:
    run = _lazy("wallets.withdrawals", "withdrawals_recover")()
    if run.results:
        logger.info("withdrawals reconciled with the bank", extra={"results": run.results})
    return run


def job_purge_idempotency_keys() -> object:
    purged = _lazy("wallets.retention", "idempotency_keys_purge")()
    if purged:
        logger.info("idempotency keys purged", extra={"count": purged})
    return purged


def job_purge_throttle_counters() -> object:
    # A no-op with REDIS_URL (Redis expires its own keys): the table is then empty.
    return _lazy("walletsite.throttles", "throttle_counters_purge")()


def default_jobs() -> list[PeriodicJob]:
    return [
        PeriodicJob("expire_payment_attempts", EXPIRE_INTERVAL_SECONDS, job_expire_payment_attempts),
        PeriodicJob("reconciliation", RECONCILIATION_INTERVAL_SECONDS, job_reconcile),
        PeriodicJob("submit_withdrawals", WITHDRAWAL_SUBMIT_INTERVAL_SECONDS, job_submit_withdrawals),
        PeriodicJob("recover_withdrawals", WITHDRAWAL_RECOVERY_INTERVAL_SECONDS, job_recover_withdrawals),
        PeriodicJob("deliver_webhooks", WEBHOOK_INTERVAL_SECONDS, job_deliver_webhooks),
        PeriodicJob("purge_idempotency_keys", IDEMPOTENCY_PURGE_INTERVAL_SECONDS, job_purge_idempotency_keys),
        PeriodicJob("purge_throttle_counters", THROTTLE_PURGE_INTERVAL_SECONDS, job_purge_throttle_counters),
    ]


def _lock_key(name: str) -> int:
    # A stable 31-bit key per job for pg_try_advisory_lock (crc32 is the same in every
    # process, unlike hash()).
    return zlib.crc32(f"wallet.worker.{name}".encode()) & 0x7FFFFFFF


class Worker:
    def __init__(
        self,
        *,
        jobs: Iterable[PeriodicJob] | None = None,
        batch_size: int = BATCH_SIZE,
        lease_seconds: float = LEASE_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.jobs = list(default_jobs() if jobs is None else jobs)
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.idle_seconds = idle_seconds
        self.stop_requested = False

    def request_stop(self, *args) -> None:
        """Signal-handler compatible: the loop stops after the step in progress."""
        self.stop_requested = True

    # -- outbox ---------------------------------------------------------------------------

    def deliver(self, events: list[OutboxEvent]) -> DeliveryOutcome:
        # The notification handlers register when their module is imported; an event
        # delivered before that would skip them, so the import comes first (and if it fails,
        # the batch fails and is retried instead of being marked delivered).
        from wallets import notifications  # noqa: F401

        return events_deliver(events, stop=lambda: self.stop_requested)

    def deliver_batch(self) -> int:
        """Claim and deliver one batch; return how many events were claimed.

        A database failure (OperationalError, InterfaceError) propagates: no event of the
        batch is marked, and all of them are delivered again once their lease runs out."""
        events = outbox_claim(limit=self.batch_size, lease_seconds=self.lease_seconds)
        if not events:
            return 0
        metrics.OUTBOX_CLAIMED.inc(len(events))
        if self.stop_requested:
            outbox_release(event_ids=[event.id for event in events])
            return len(events)
        try:
            outcome = self.deliver(events)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            # Not a handler's failure (they are caught per event) but the delivery's own,
            # e.g. the notifications module failing to import: every event retries.
            outcome = DeliveryOutcome(failed={event.id: exc for event in events})
        not_started = {event.id for event in outcome.not_started}
        outbox_mark_delivered(
            event_ids=[event.id for event in events if event.id not in outcome.failed and event.id not in not_started]
        )
        outbox_release(event_ids=sorted(not_started))
        for event in events:
            if event.id in outcome.failed:
                self._mark_failed(event, outcome.failed[event.id])
        return len(events)

    def _mark_failed(self, event: OutboxEvent, exc: BaseException) -> None:
        retry_in = outbox_retry_delay(attempts=event.attempts)
        logger.warning(
            "event delivery failed; will retry",
            exc_info=exc,
            extra={
                "event_id": event.id,
                "event_type": event.type,
                "attempts": event.attempts,
                "retry_in_seconds": retry_in.total_seconds(),
            },
        )
        metrics.OUTBOX_FAILURES.labels(event.type).inc()
        outbox_mark_failed(event_id=event.id, error=f"{type(exc).__name__}: {exc}", retry_in=retry_in)

    # -- periodic jobs --------------------------------------------------------------------

    def run_job(self, job: PeriodicJob) -> str:
        """Run one job under its advisory lock; return ok, error, unavailable or skipped."""
        key = _lock_key(job.name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                return "skipped"
        started = time.monotonic()
        try:
            job.run()
            result = "ok"
        except ImportError as exc:
            logger.error("periodic job cannot run: its code is missing", extra={"job": job.name, "error": str(exc)})
            result = "unavailable"
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            logger.exception("periodic job failed", extra={"job": job.name})
            result = "error"
        finally:
            if connection.connection is not None and connection.is_usable():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        metrics.WORKER_JOB_RUNS.labels(job.name, result).inc()
        metrics.WORKER_JOB_DURATION.labels(job.name).observe(time.monotonic() - started)
        return result

    def run_due_jobs(self, *, now: float | None = None, force: bool = False) -> list[str]:
        """Run every job whose time has come (every job with force); return their names."""
        now = time.monotonic() if now is None else now
        ran = []
        for job in self.jobs:
            if self.stop_requested:
                break
            if force or now >= job.next_due:
                self.run_job(job)
                job.next_due = time.monotonic() + job.interval_seconds
                ran.append(job.name)
        return ran

    # -- the loop -------------------------------------------------------------------------

    def run_once(self) -> None:
        """Deliver everything deliverable now, run every job once: `run_worker --once`.

        Claims until one comes back empty (not merely short: rows another worker holds are
        skipped, so a short batch does not mean the queue is empty). Failed events are not
        offered again during their backoff, so this ends."""
        while not self.stop_requested and self.deliver_batch() > 0:
            pass
        self.run_due_jobs(force=True)

    def run(self) -> None:
        logger.info("worker started", extra={"jobs": [job.name for job in self.jobs]})
        failures = 0
        while not self.stop_requested:
            # As Django does at each request: drop a connection that broke or got old.
            close_old_connections()
            try:
                claimed = self.deliver_batch()
                if not self.stop_requested:
                    self.run_due_jobs()
                failures = 0
            except (OperationalError, InterfaceError) as exc:
                failures += 1
                wait = min(2 ** (failures - 1), DATABASE_RETRY_MAX_SECONDS)
                logger.error(
                    "database unavailable; the worker retries",
                    extra={"error": str(exc).strip()[:300], "retry_in_seconds": wait},
                )
                connection.close_if_unusable_or_obsolete()
                self._sleep(wait)
                continue
            if claimed < self.batch_size:
                self._sleep(self.idle_seconds)
        connection.close()
        logger.info("worker stopped")

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _SLICE_SECONDS))
