"""The background worker: outbox delivery (retries, crashed workers, stopping mid-batch), the
periodic jobs, a database outage, and `manage.py run_worker` stopping on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import OperationalError, connection, connections, transaction
from django.db.backends.postgresql.base import DatabaseWrapper
from django.utils import timezone
from prometheus_client import REGISTRY

from ledger.models import OutboxEvent, ReconciliationRun
from ledger.outbox import outbox_claim, outbox_emit, outbox_mark_delivered
from wallets import events
from wallets.models import PaymentAttempt
from wallets.tests.factories import register_user
from wallets.worker import PeriodicJob, Worker, _lazy, _lock_key, default_jobs

ROOT = settings.BASE_DIR


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _emit(type: str, n: int = 1) -> list[OutboxEvent]:
    with transaction.atomic():
        return [outbox_emit(type=type, payload={"n": i, "amount": 100}) for i in range(n)]


@pytest.fixture(autouse=True)
def _only_this_tests_events(request):
    """Events that other tests' threads committed (and a flush has not removed yet) are put
    out of reach, so that each test sees the queue it built."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
    pending = OutboxEvent.objects.select_for_update(skip_locked=True).filter(delivered_at__isnull=True)
    with transaction.atomic():
        OutboxEvent.objects.filter(id__in=pending.values("id")).update(available_at=timezone.now() + timedelta(days=1))


@pytest.fixture
def handlers():
    """Register handlers for a test (per event, or with many= for a list of events); they
    are removed afterwards."""
    added: list[tuple[str, dict]] = []

    def register(event_type: str, handler: events.Handler | None = None, *, many: events.ManyHandler | None = None):
        events.handler_register(event_type=event_type, handler=handler, many=many)
        added.append((event_type, {"handler": handler, "many": many}))

    yield register
    for event_type, kwargs in added:
        events.handler_unregister(event_type=event_type, **kwargs)


def _delivered_lines(caplog, event_type: str) -> list[logging.LogRecord]:
    # Only this test's event type: rows other tests' threads may have committed are
    # delivered by the same worker.
    return [
        r
        for r in caplog.records
        if r.name == "wallets.events" and r.getMessage() == "event delivered" and r.event_type == event_type
    ]


# -- delivery -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_event_is_delivered_logged_and_counted(caplog):
    # given
    caplog.set_level(logging.INFO)
    (event,) = _emit("test.delivered")
    before = _sample("wallet_outbox_delivered_total", type="test.delivered")
    # when
    Worker(jobs=[]).run_once()
    # then
    event.refresh_from_db()
    assert event.delivered_at is not None and event.attempts == 1
    (line,) = _delivered_lines(caplog, "test.delivered")
    assert line.event_id == event.id and line.event_type == "test.delivered"
    # the payload (amounts, wallets) stays out of the log
    assert not hasattr(line, "payload") and "amount" not in line.getMessage()
    assert _sample("wallet_outbox_delivered_total", type="test.delivered") == before + 1


@pytest.mark.django_db
def test_a_failing_handler_makes_the_event_retry_later(caplog, handlers):
    # given: a consumer that is down the first time
    caplog.set_level(logging.INFO)
    calls: list[int] = []

    def flaky(event: OutboxEvent) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise ConnectionError("merchant endpoint refused the connection")

    handlers("test.flaky", flaky)
    (event,) = _emit("test.flaky")
    failures_before = _sample("wallet_outbox_failures_total", type="test.flaky")
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: not delivered, offered again only after the backoff
    event.refresh_from_db()
    assert event.delivered_at is None and event.leased_until is None
    assert event.attempts == 1
    assert event.last_error == "ConnectionError: merchant endpoint refused the connection"
    assert event.available_at > timezone.now() + timedelta(seconds=3)
    assert _sample("wallet_outbox_failures_total", type="test.flaky") == failures_before + 1
    assert _delivered_lines(caplog, "test.flaky") == []
    worker.run_once()
    assert calls == [event.id]
    # when: the backoff has passed
    OutboxEvent.objects.filter(id=event.id).update(available_at=timezone.now() - timedelta(seconds=1))
    worker.run_once()
    # then
    event.refresh_from_db()
    assert event.delivered_at is not None and event.attempts == 2
    assert calls == [event.id, event.id]
    assert len(_delivered_lines(caplog, "test.flaky")) == 1


@pytest.mark.django_db
def test_type_handlers_run_before_the_log_for_every_event(handlers, caplog):
    # given
    caplog.set_level(logging.INFO)
    order: list[str] = []
    handlers("test.ordered", lambda event: order.append("specific"))
    handlers(events.ALL_EVENTS, lambda event: order.append("all"))
    (event,) = _emit("test.ordered")

    def log_written() -> bool:
        return bool(_delivered_lines(caplog, "test.ordered"))

    handlers(events.ALL_EVENTS, lambda event: order.append(f"all, logged: {log_written()}"))
    # when
    outcome = events.events_deliver([event])
    # then: the specific one first, the built-in log line before the test's catch-alls
    assert outcome.failed == {} and outcome.not_started == []
    assert order == ["specific", "all", "all, logged: True"]
    assert events.handlers_of("test.ordered")[1] == events.Registration(events.event_log_delivered, many=True)


@pytest.mark.django_db
def test_a_crashed_workers_event_is_delivered_after_its_lease(caplog):
    # given: a worker claimed the event and died before delivering it
    caplog.set_level(logging.INFO)
    (event,) = _emit("test.crash")
    outbox_claim(limit=10, lease_seconds=60)
    worker = Worker(jobs=[])
    worker.run_once()
    event.refresh_from_db()
    assert event.delivered_at is None
    # when: the lease runs out
    OutboxEvent.objects.filter(id=event.id).update(leased_until=timezone.now() - timedelta(seconds=1))
    worker.run_once()
    # then
    event.refresh_from_db()
    assert event.delivered_at is not None and event.attempts == 2


@pytest.mark.django_db
def test_stopping_mid_batch_hands_back_the_events_not_started(handlers):
    # given: a batch of one event of a kind, then two of another (handled after the first)
    with transaction.atomic():
        first = outbox_emit(type="test.stop.first", payload={})
        rest = [outbox_emit(type="test.stop.rest", payload={}) for _ in range(2)]
    delivered: list[int] = []

    def deliver(event: OutboxEvent) -> None:
        delivered.append(event.id)
        worker.request_stop()  # SIGTERM arrives while the first event is being delivered

    handlers("test.stop.first", deliver)
    handlers("test.stop.rest", lambda event: delivered.append(event.id))
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: the first finished, the other two are free for the next worker at once
    assert delivered == [first.id]
    rows = {e.id: e for e in OutboxEvent.objects.filter(type__startswith="test.stop.")}
    assert rows[first.id].delivered_at is not None
    for event in rest:
        assert rows[event.id].delivered_at is None
        assert rows[event.id].leased_until is None and rows[event.id].attempts == 0


@pytest.mark.django_db
def test_a_stop_requested_during_the_claim_hands_the_whole_batch_back(monkeypatch):
    # given: SIGTERM arrives while the worker is claiming
    emitted = _emit("test.stop_at_claim", n=2)
    worker = Worker(jobs=[])
    real_claim = outbox_claim

    def claim_then_stop(**kwargs):
        claimed = real_claim(**kwargs)
        worker.request_stop()
        return claimed

    monkeypatch.setattr("wallets.worker.outbox_claim", claim_then_stop)
    # when
    assert worker.deliver_batch() == 2
    # then
    for event in OutboxEvent.objects.filter(id__in=[e.id for e in emitted]):
        assert (event.delivered_at, event.leased_until, event.attempts) == (None, None, 0)


# -- batches --------------------------------------------------------------------------------


def _outcomes(emitted: list[OutboxEvent]) -> list[tuple[bool, int]]:
    rows = {e.id: e for e in OutboxEvent.objects.filter(id__in=[e.id for e in emitted])}
    return [(rows[e.id].delivered_at is not None, rows[e.id].attempts) for e in emitted]


def _backoff_passes(emitted: list[OutboxEvent]) -> None:
    OutboxEvent.objects.filter(id__in=[e.id for e in emitted]).update(
        available_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_one_failing_event_of_a_batch_fails_alone_and_is_retried_alone(caplog, handlers):
    # given: a batch of three events, a handler that fails on the second, a handler after it
    caplog.set_level(logging.INFO)
    emitted = _emit("test.batch_one_fails", n=3)
    bad = emitted[1].id
    first_calls: list[int] = []
    second_calls: list[int] = []

    def fails_on_bad(event: OutboxEvent) -> None:
        first_calls.append(event.id)
        if event.id == bad and first_calls.count(bad) == 1:
            raise ValueError("no such merchant")

    handlers("test.batch_one_fails", fails_on_bad)
    handlers("test.batch_one_fails", lambda event: second_calls.append(event.id))
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: the other two are delivered; the bad one gets no later handler, no log line, and
    # comes back after its backoff
    assert _outcomes(emitted) == [(True, 1), (False, 1), (True, 1)]
    assert second_calls == [emitted[0].id, emitted[2].id]
    assert sorted(r.event_id for r in _delivered_lines(caplog, "test.batch_one_fails")) == second_calls
    failed = OutboxEvent.objects.get(id=bad)
    assert failed.last_error == "ValueError: no such merchant" and failed.leased_until is None
    assert failed.available_at > timezone.now() + timedelta(seconds=3)
    (warning,) = [r for r in caplog.records if r.getMessage() == "event delivery failed; will retry"]
    assert warning.event_id == bad and warning.exc_info is not None
    # when: its backoff has passed
    _backoff_passes(emitted)
    worker.run_once()
    # then: only it is delivered again
    assert _outcomes(emitted) == [(True, 1), (True, 2), (True, 1)]
    assert first_calls == [*(e.id for e in emitted), bad]
    assert second_calls == [emitted[0].id, emitted[2].id, bad]


@pytest.mark.django_db
def test_a_batched_handler_that_raises_is_run_again_one_event_at_a_time(handlers):
    # given: a handler of lists that fails whenever the bad event is among them
    emitted = _emit("test.batch_many_raises", n=3)
    bad = emitted[1].id
    calls: list[list[int]] = []
    after: list[list[int]] = []

    def many(batch: list[OutboxEvent]) -> None:
        calls.append([e.id for e in batch])
        if bad in calls[-1]:
            raise ValueError("bad payload")

    handlers("test.batch_many_raises", many=many)
    handlers("test.batch_many_raises", many=lambda batch: after.append([e.id for e in batch]))
    # when
    Worker(jobs=[]).run_once()
    # then: the batch, then each event alone to find the one that fails
    ids = [e.id for e in emitted]
    assert calls == [ids, [ids[0]], [ids[1]], [ids[2]]]
    assert after == [[ids[0], ids[2]]]
    assert _outcomes(emitted) == [(True, 1), (False, 1), (True, 1)]
    assert OutboxEvent.objects.get(id=bad).last_error == "ValueError: bad payload"


@pytest.mark.django_db
def test_a_batched_handler_names_the_events_it_failed_and_the_others_are_delivered(handlers):
    # given
    emitted = _emit("test.batch_events_failed", n=3)
    bad = emitted[2].id
    calls: list[list[int]] = []

    def many(batch: list[OutboxEvent]) -> None:
        calls.append([e.id for e in batch])
        if len(calls) == 1:
            raise events.EventsFailed({bad: ConnectionError("mail server went away")})

    handlers("test.batch_events_failed", many=many)
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: not run again for the others
    assert calls == [[e.id for e in emitted]]
    assert _outcomes(emitted) == [(True, 1), (True, 1), (False, 1)]
    assert OutboxEvent.objects.get(id=bad).last_error == "ConnectionError: mail server went away"
    # and the retry is for it alone
    _backoff_passes(emitted)
    worker.run_once()
    assert calls == [[e.id for e in emitted], [bad]]
    assert _outcomes(emitted) == [(True, 1), (True, 1), (True, 2)]


@pytest.mark.django_db
def test_a_database_failure_during_a_batch_marks_none_of_it(handlers):
    # given: the database fails while the second event is handled
    emitted = _emit("test.batch_db_down", n=3)

    def handler(event: OutboxEvent) -> None:
        if event.id == emitted[1].id:
            raise OperationalError("server closed the connection unexpectedly")

    handlers("test.batch_db_down", handler)
    worker = Worker(jobs=[])
    # when / then: the worker's loop sees it (and backs off)
    with pytest.raises(OperationalError):
        worker.deliver_batch()
    # nothing was marked: all of them stay leased, and come back once the lease runs out
    rows = list(OutboxEvent.objects.filter(id__in=[e.id for e in emitted]))
    assert all(e.delivered_at is None and e.leased_until is not None and e.last_error == "" for e in rows)
    assert worker.deliver_batch() == 0


@pytest.mark.django_db
def test_a_crashed_workers_batch_is_taken_over_after_its_lease_and_its_late_finish_changes_nothing(handlers):
    # given: worker A claimed a batch, handled it, and stalled before marking it delivered
    emitted = _emit("test.batch_takeover", n=3)
    seen: list[int] = []
    handlers("test.batch_takeover", many=lambda batch: seen.extend(e.id for e in batch))
    stalled = Worker(jobs=[])
    claimed = outbox_claim(limit=10, lease_seconds=60)
    assert stalled.deliver(claimed).failed == {}
    worker = Worker(jobs=[])
    worker.run_once()
    assert _outcomes(emitted) == [(False, 1)] * 3
    # when: the lease runs out, another worker delivers the batch (again: at least once)
    OutboxEvent.objects.filter(id__in=[e.id for e in emitted]).update(
        leased_until=timezone.now() - timedelta(seconds=1)
    )
    worker.run_once()
    # then
    assert _outcomes(emitted) == [(True, 2)] * 3
    assert seen == [e.id for e in emitted] * 2
    # and the stalled worker finishing late marks nothing
    assert outbox_mark_delivered(event_ids=[e.id for e in claimed]) == 0


@pytest.mark.django_db
def test_events_of_different_kinds_in_a_batch_each_get_their_own_handlers(handlers):
    # given
    with transaction.atomic():
        a1 = outbox_emit(type="test.kind_a", payload={})
        b1 = outbox_emit(type="test.kind_b", payload={})
        a2 = outbox_emit(type="test.kind_a", payload={})
    calls: list[tuple[str, list[int]]] = []
    handlers("test.kind_a", many=lambda batch: calls.append(("a", [e.id for e in batch])))
    handlers("test.kind_b", many=lambda batch: calls.append(("b", [e.id for e in batch])))
    # when
    Worker(jobs=[]).run_once()
    # then
    assert calls == [("a", [a1.id, a2.id]), ("b", [b1.id])]
    assert _outcomes([a1, b1, a2]) == [(True, 1)] * 3


def test_a_handler_is_given_one_way():
    with pytest.raises(ValueError):
        events.handler_register(event_type="test.neither")
    with pytest.raises(ValueError):
        events.handler_register(event_type="test.both", handler=print, many=print)


@pytest.mark.django_db
def test_run_once_delivers_more_than_one_batch():
    # given
    _emit("test.many", n=12)
    # when
    Worker(jobs=[], batch_size=5).run_once()
    # then
    assert not OutboxEvent.objects.filter(type="test.many", delivered_at__isnull=True).exists()


# -- periodic jobs --------------------------------------------------------------------------


@pytest.mark.django_db
def test_expiry_job_expires_pending_attempts_past_their_time():
    # given
    _, wallet = register_user()
    due = PaymentAttempt.objects.create(
        wallet=wallet, amount=500, currency="INR", expires_at=timezone.now() - timedelta(seconds=1)
    )
    fresh = PaymentAttempt.objects.create(
        wallet=wallet, amount=500, currency="INR", expires_at=timezone.now() + timedelta(minutes=5)
    )
    worker = Worker()
    # when
    worker.run_due_jobs(force=True)
    # then
    due.refresh_from_db()
    fresh.refresh_from_db()
    assert (due.status, fresh.status) == ("expired", "pending")


@pytest.mark.django_db
def test_reconciliation_job_records_a_run_by_the_worker():
    # when
    Worker().run_due_jobs(force=True)
    # then
    run = ReconciliationRun.objects.get()
    assert run.triggered_by == "system:worker"
    assert run.ok is True
    assert _sample("wallet_reconciliation_mismatches") == 0


@pytest.mark.django_db
def test_reconciliation_job_reports_a_broken_ledger(caplog):
    # given: a cached balance that no longer matches its entries
    caplog.set_level(logging.INFO)
    _, wallet = register_user()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_account SET balance = balance + 7 WHERE id = %s", [wallet.account_id])
    runs_before = _sample("wallet_reconciliation_runs_total", result="mismatch")
    reconciliation = next(job for job in default_jobs() if job.name == "reconciliation")
    # when
    result = Worker(jobs=[reconciliation]).run_job(reconciliation)
    # then
    assert result == "ok"  # the job ran; what it found is in the run, the metric and the log
    run = ReconciliationRun.objects.get()
    assert run.ok is False
    assert _sample("wallet_reconciliation_mismatches") > 0
    assert _sample("wallet_reconciliation_runs_total", result="mismatch") == runs_before + 1
    assert any(r.levelno == logging.ERROR and r.name == "ledger.reconciliation" for r in caplog.records)


@pytest.mark.django_db
def test_a_job_whose_code_is_missing_is_logged_and_the_worker_goes_on(caplog):
    # given
    caplog.set_level(logging.INFO)
    missing = PeriodicJob("missing", 60, lambda: _lazy("wallets.no_such_module", "job")())
    ran: list[str] = []
    after = PeriodicJob("after", 60, lambda: ran.append("after"))
    (event,) = _emit("test.with_missing_job")
    worker = Worker(jobs=[missing, after])
    # when
    worker.run_once()
    # then
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "wallets.worker"]
    assert [r.job for r in errors] == ["missing"]
    assert "wallets.no_such_module" in errors[0].error
    assert ran == ["after"]
    event.refresh_from_db()
    assert event.delivered_at is not None
    assert _sample("wallet_worker_job_runs_total", job="missing", result="unavailable") >= 1


@pytest.mark.django_db
def test_a_failing_job_is_logged_and_the_next_one_runs(caplog):
    # given
    def broken() -> None:
        raise ValueError("bad data")

    ran: list[str] = []
    worker = Worker(jobs=[PeriodicJob("broken", 60, broken), PeriodicJob("next", 60, lambda: ran.append("next"))])
    # when
    results = [worker.run_job(job) for job in worker.jobs]
    # then
    assert results == ["error", "ok"]
    assert ran == ["next"]
    (line,) = [r for r in caplog.records if r.getMessage() == "periodic job failed"]
    assert line.job == "broken" and line.exc_info is not None


@pytest.mark.django_db
def test_jobs_run_when_due_and_not_before():
    # given
    ran: list[str] = []
    job = PeriodicJob("counted", 300, lambda: ran.append("counted"))
    worker = Worker(jobs=[job])
    # when / then: due at start
    assert worker.run_due_jobs() == ["counted"]
    # not again within its interval
    assert worker.run_due_jobs() == []
    # again once the interval has passed
    assert worker.run_due_jobs(now=time.monotonic() + 301) == ["counted"]
    assert ran == ["counted", "counted"]


@pytest.mark.django_db(transaction=True)
def test_a_job_another_worker_is_running_is_skipped():
    # given: another worker's connection holds the job's advisory lock
    ran: list[str] = []
    job = PeriodicJob("exclusive", 60, lambda: ran.append("exclusive"))
    held = threading.Event()
    release = threading.Event()

    def other_worker() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [_lock_key("exclusive")])
                held.set()
                release.wait(10)
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_lock_key("exclusive")])
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    assert held.wait(10)
    worker = Worker(jobs=[job])
    try:
        # when
        result = worker.run_job(job)
    finally:
        release.set()
        thread.join(10)
    # then
    assert result == "skipped" and ran == []
    # and once the other is done, it runs (and releases the lock after itself)
    assert worker.run_job(job) == "ok" and ran == ["exclusive"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        assert cursor.fetchone()[0] == 0


# -- the loop -------------------------------------------------------------------------------


def test_the_loop_survives_a_database_outage_and_stops_on_request(caplog, tmp_path, django_db_blocker):
    # given: a database that does not answer (a real connection attempt to a socket nobody
    # listens on), for this thread
    caplog.set_level(logging.INFO)
    real = connections["default"]
    broken_settings = {**real.settings_dict, "HOST": str(tmp_path), "PORT": "5999"}
    broken_settings["OPTIONS"] = {**broken_settings["OPTIONS"], "pool": {"min_size": 1, "max_size": 2, "timeout": 0.5}}
    broken = DatabaseWrapper(broken_settings, alias="worker_unreachable")
    connections["default"] = broken
    worker = Worker(jobs=[])
    stopper = threading.Timer(2.5, worker.request_stop)
    stopper.start()
    try:
        # when
        started = time.monotonic()
        with django_db_blocker.unblock():
            worker.run()
        elapsed = time.monotonic() - started
    finally:
        stopper.cancel()
        connections["default"] = real
        broken.close_pool()
    # then: it kept retrying, with backoff, and stopped when asked
    outages = [r for r in caplog.records if r.getMessage() == "database unavailable; the worker retries"]
    assert len(outages) >= 2
    assert [r.retry_in_seconds for r in outages[:2]] == [1, 2]
    assert elapsed < 5
    assert caplog.records[-1].getMessage() == "worker stopped"


def _test_database_url() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}@localhost:{db['PORT']}/{db['NAME']}?host={quote(db['HOST'])}"


@pytest.mark.django_db(transaction=True)
def test_run_worker_delivers_and_exits_0_on_sigterm():
    # given: the command running against the test database
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "PYTHONUNBUFFERED": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        (event,) = _emit("test.subprocess")
        # when: it delivers the event
        deadline = time.monotonic() + 30
        while not OutboxEvent.objects.filter(id=event.id, delivered_at__isnull=False).exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the worker did not deliver the event"
            time.sleep(0.1)
        # and is asked to stop
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then
    assert proc.returncode == 0, output
    assert '"message": "event delivered"' in output
    assert output.rstrip().splitlines()[-1].find('"worker stopped"') != -1
