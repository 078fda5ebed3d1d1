"""ledger.batcher on a real PostgreSQL: batches form from what queued while one was in flight,
a failing command is split out of its batch, a lost COMMIT is never re-run, conflicting
commands never share a batch. Commands here write to a probe table, so what committed is
read back from the database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import DataError, connection

from ledger.batcher import Batcher, BatchTimeout, CommitOutcomeUnknown, Executed
from ledger.tests.batching import queue_in_order
from ledger.tests.faults import backend_killer
from walletsite.testing import committed_rows, probe_table

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe():
    with probe_table("batcher_probe", "v integer PRIMARY KEY, owner text NOT NULL"):
        yield


def _committed() -> list[int]:
    return [v for (v,) in committed_rows("SELECT v FROM batcher_probe ORDER BY v")]


class Recorder:
    """An execute that inserts each command (value, owner) into the probe table and fails the
    database work of negative values; it records every batch it is given and can hold its
    first batch until released, so that later commands queue behind it."""

    def __init__(self, *, hold_first: bool = True) -> None:
        self.batches: list[list[int]] = []
        self.threads: list[int] = []  # the thread that ran each batch
        self.entered = threading.Event()
        self.release = threading.Event()
        self._hold = hold_first

    def __call__(self, commands):
        self.batches.append([v for v, _ in commands])
        self.threads.append(threading.get_ident())
        if self._hold:
            self._hold = False
            self.entered.set()
            assert self.release.wait(30)
        with connection.cursor() as cursor:
            for value, owner in commands:
                cursor.execute("INSERT INTO batcher_probe VALUES (%s, %s)", [abs(value), owner])
                if value < 0:
                    cursor.execute("SELECT 1 / 0")
        return Executed([f"ok {v}" for v, _ in commands])


def _result_or_error(batcher: Batcher, command):
    """`command`'s result, or the exception it raised, on a pool thread that then closes its
    connection."""
    try:
        return batcher.submit(command)
    except Exception as exc:
        return exc
    finally:
        connection.close()


def _submit_all(batcher: Batcher, recorder: Recorder, commands: list[tuple[int, str]]) -> list:
    """Submit a first command that holds the batcher, queue `commands` behind it, release,
    and return each command's result or exception (the first one's last)."""
    with ThreadPoolExecutor(max_workers=len(commands) + 1) as pool:
        first = pool.submit(_result_or_error, batcher, (1000, "first"))
        assert recorder.entered.wait(30)
        calls = [lambda command=command: _result_or_error(batcher, command) for command in commands]
        futures = queue_in_order(pool, batcher, calls)
        recorder.release.set()
        return [f.result(timeout=60) for f in futures] + [first.result(timeout=60)]


def test_commands_queued_behind_a_batch_form_the_next_batch_and_commit_together(probe):
    # given
    recorder = Recorder()
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])
    # when
    results = _submit_all(batcher, recorder, [(v, f"owner{v}") for v in range(1, 9)])
    # then: one batch of the first command, one of the eight queued behind it
    assert recorder.batches == [[1000], list(range(1, 9))]
    assert results == [f"ok {v}" for v in range(1, 9)] + ["ok 1000"]
    assert _committed() == [*range(1, 9), 1000]


def test_a_failing_command_is_split_out_and_fails_alone(probe):
    # given: the fifth of eight commands fails its database work (division by zero)
    recorder = Recorder()
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])
    commands = [(v if v != 5 else -5, f"owner{v}") for v in range(1, 9)]
    # when
    results = _submit_all(batcher, recorder, commands)
    # then: only the culprit failed, every other command committed once
    assert isinstance(results[4], DataError), results
    assert [r for i, r in enumerate(results[:8]) if i != 4] == [f"ok {v}" for v in range(1, 9) if v != 5]
    assert _committed() == [1, 2, 3, 4, 6, 7, 8, 1000]
    # and: the batch was split in halves down to the culprit, not retried whole
    assert recorder.batches[1] == [1, 2, 3, 4, -5, 6, 7, 8]
    assert [1, 2, 3, 4] in recorder.batches and [-5] in recorder.batches
    assert recorder.batches.count([1, 2, 3, 4, -5, 6, 7, 8]) == 1


def test_commands_with_one_conflict_key_never_share_a_batch(probe):
    # given: three commands of owner "a" and two of owner "b", queued together
    recorder = Recorder()
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])
    commands = [(1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "b")]
    # when
    results = _submit_all(batcher, recorder, commands)
    # then: each batch holds one command per owner, in arrival order
    assert recorder.batches[1:] == [[1, 2], [3, 5], [4]]
    assert results[:5] == [f"ok {v}" for v in range(1, 6)]
    assert _committed() == [1, 2, 3, 4, 5, 1000]


def test_a_lost_commit_is_never_run_again_and_the_batcher_recovers(probe):
    # given: a batcher whose connection is killed after its batch's work, before COMMIT
    recorder = Recorder(hold_first=False)
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])

    batcher.before_commit = backend_killer()
    # when
    with pytest.raises(CommitOutcomeUnknown):
        batcher.submit((7, "a"))
    # then: the batch ran once, was not re-run, and nothing of it committed
    assert recorder.batches == [[7]]
    assert _committed() == []
    # and: the next batch runs on a fresh connection
    assert batcher.submit((8, "a")) == "ok 8"
    assert _committed() == [8]


def test_a_command_submitted_while_no_batch_is_in_flight_runs_on_its_own_thread(probe):
    # given
    recorder = Recorder(hold_first=False)
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])
    # when
    result = batcher.submit((3, "a"))
    # then: no hand-over to another thread
    assert (result, recorder.threads) == ("ok 3", [threading.get_ident()])
    assert _committed() == [3]


def test_the_oldest_queued_command_leads_the_next_batch_on_its_own_thread(probe):
    # given: three commands queued behind a held batch, each from a thread of its own
    recorder = Recorder()
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1])
    submitted_by: dict[int, int] = {}

    def submit(command):
        submitted_by[command[0]] = threading.get_ident()
        try:
            return batcher.submit(command)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(submit, (1000, "first"))
        assert recorder.entered.wait(30)
        futures = queue_in_order(pool, batcher, [lambda v=v: submit((v, f"owner{v}")) for v in (1, 2, 3)])
        recorder.release.set()
        results = [f.result(timeout=60) for f in futures] + [first.result(timeout=60)]
    # then: the first batch ran on the first command's thread, the next on the thread of the
    # oldest command queued behind it, and every command was answered
    assert recorder.batches == [[1000], [1, 2, 3]]
    assert recorder.threads == [submitted_by[1000], submitted_by[1]]
    assert results == ["ok 1", "ok 2", "ok 3", "ok 1000"]
    assert _committed() == [1, 2, 3, 1000]


def test_a_command_that_times_out_in_the_queue_leaves_it_and_never_runs(probe):
    # given: a batcher that answers within 0.3 s, its first batch held for longer
    recorder = Recorder()
    batcher = Batcher(name="test", execute=recorder, conflict_key=lambda c: c[1], timeout=0.3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(_result_or_error, batcher, (1000, "first"))
        assert recorder.entered.wait(30)
        # when: a command queues behind it and its wait runs out
        late = pool.submit(_result_or_error, batcher, (5, "b")).result(timeout=30)
        recorder.release.set()
        assert first.result(timeout=60) == "ok 1000"
    # then: it was answered with a timeout and left the queue without running
    assert isinstance(late, BatchTimeout)
    assert recorder.batches == [[1000]] and not batcher._queue
    # and: the next command leads a batch of its own at once
    assert batcher.submit((6, "b")) == "ok 6"
    assert _committed() == [6, 1000]
