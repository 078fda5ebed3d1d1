"""Group commit: money commands that arrive while a batch is in flight share one database
transaction, and so one WAL flush and one round of locks.

A `Batcher` belongs to one process. Request threads `submit` a command; when no batch is in
flight, the submitting thread leads: it takes every command queued at that moment (up to
`max_batch`, its own first) and hands them to `execute`, which runs inside one durable
transaction on that thread's connection and returns one result per command. The commands
that arrive meanwhile queue, and their threads wait. Once its batch is answered, the leader
hands the lead to the oldest command still queued, whose thread wakes and runs the next
batch (with everything queued by then), and the leader goes back to its own request. Nothing
waits for a batch to fill: a command that arrives while the database is idle is a batch of
one at once, run by its own thread without a hand-over to another; under load the batches
grow by themselves, and a hot account (everyone paying one merchant) is locked and committed
once per batch instead of once per command.

Each command still succeeds or fails on its own: `execute` evaluates them in order and
returns a refusal (insufficient funds, a wrong PIN) as that command's result, not as an
error of the batch. It returns its writes too (`Executed`), which the batcher sends with the
COMMIT, in one round trip (walletsite.db.pipelined). What the batcher adds:

- Conflicts: two commands with the same `conflict_key` (the transfer batcher uses the
  sender) never share a batch; the later one waits for the next, in arrival order. That is
  what lets `execute` read the database once for the whole batch (a sender's outgoing totals,
  an idempotency key) without seeing its own batch's earlier writes.
- Retries: a deadlock or serialization failure rolls the whole transaction back, so the
  batch runs again (ledger.posting.with_retries).
- Splitting: when the database work of a batch fails otherwise (a constraint, a trigger, a
  connection broken before the writes and COMMIT are sent), it rolled back entirely; the
  batch is split in halves,
  each run on its own, down to the one command that fails, which alone gets the error.
- A lost COMMIT: when the connection breaks while the writes and COMMIT are on their way, the
  batch may or may not have committed. It is never run again: every command of it fails with
  `CommitOutcomeUnknown` (503 to the client, which retries with its Idempotency-Key and gets
  the stored answer if the batch did commit, or a fresh run if it did not, since the keys
  commit with the money).

Where the caller is already inside a database transaction (a test case's) or GROUP_COMMIT
is off, `submit` runs the command as a batch of one on the caller's own thread and
connection: the same `execute`, the same durable transaction.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from ledger.posting import atomic, with_retries
from walletsite import metrics
from walletsite.db import CommitOutcomeUnknown, Query, pipelined

__all__ = ["BatchTimeout", "Batcher", "CommitOutcomeUnknown", "Executed"]

logger = logging.getLogger("ledger.batcher")

C = TypeVar("C")
R = TypeVar("R")


@dataclass(frozen=True)
class Executed(Generic[R]):
    """What `execute` returns: one result per command, in order, and the statements that
    write them, which the batcher sends with the batch's COMMIT in one round trip."""

    results: list[R]
    writes: Sequence[Query] = ()


class BatchTimeout(Exception):
    """The command was not answered within the submit timeout (it may still run)."""


@dataclass
class _Pending(Generic[C, R]):
    command: C
    conflict: Hashable
    # Set when the command is answered, or when its thread is to lead the next batch.
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    answered: bool = False
    result: R | None = None
    error: BaseException | None = None


class Batcher(Generic[C, R]):
    def __init__(
        self,
        *,
        name: str,
        execute: Callable[[Sequence[C]], Executed[R]],
        conflict_key: Callable[[C], Hashable],
        max_batch: int = 64,
        timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.execute = execute
        self.conflict_key = conflict_key
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: collections.deque[_Pending[C, R]] = collections.deque()
        self._lock = threading.Lock()
        # A thread is running a batch, or has been told to run the next one.
        self._leading = False
        self._pid: int | None = None
        # Test hook: called on the leading thread after `execute` returned, just before its
        # writes and COMMIT are sent.
        self.before_commit: Callable[[], None] | None = None

    def submit(self, command: C) -> R:
        """Run `command` in the next batch and return its result; raise what made its batch
        fail (CommitOutcomeUnknown, BatchTimeout, a database error of this command)."""
        if connection.in_atomic_block or not settings.WALLET["GROUP_COMMIT"]:
            return self._commit([command])[0]
        pending = _Pending(command, self.conflict_key(command))
        with self._lock:
            if self._pid != os.getpid():  # forked (gunicorn): nothing of the parent's is ours
                self._pid, self._leading = os.getpid(), False
                self._queue.clear()
            self._queue.append(pending)
            pending.lead = not self._leading
            self._leading = True
        if not pending.lead and not pending.wake.wait(self.timeout):
            with self._lock:
                if not pending.lead and not pending.answered:
                    # Still queued, it leaves the queue and never runs; in a batch in
                    # flight, it may still run.
                    self._forget(pending)
                    raise BatchTimeout(f"no answer from the {self.name} batcher within {self.timeout} s")
        if not pending.answered:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    # -- the leading thread ------------------------------------------------------------

    def _take(self) -> list[_Pending[C, R]]:
        """The queued commands, oldest first, up to max_batch, none two with one conflict
        key; the others stay queued in their order."""
        with self._lock:
            batch: list[_Pending[C, R]] = []
            seen: set[Hashable] = set()
            kept: list[_Pending[C, R]] = []
            while self._queue and len(batch) < self.max_batch:
                pending = self._queue.popleft()
                if pending.conflict in seen:
                    kept.append(pending)
                    continue
                seen.add(pending.conflict)
                batch.append(pending)
            self._queue.extendleft(reversed(kept))
            return batch

    def _lead(self, own: _Pending[C, R]) -> None:
        """Run batches on this thread and its connection until `own` is answered (its first
        batch, unless an earlier command of the same conflict key held it back), then hand
        the lead to the oldest command still queued, whose thread runs the next batch."""
        try:
            while not own.answered:
                batch = self._take()
                try:
                    self._run(batch)
                except BaseException as exc:  # every waiter must be answered
                    logger.exception("batch failed", extra={"batcher": self.name})
                    for pending in batch:
                        if pending.error is None and pending.result is None:
                            pending.error = exc
                for pending in batch:
                    pending.answered = True
                    pending.wake.set()
        finally:
            with self._lock:
                if not own.answered:  # left by an exception (raised to its caller) before its batch ran
                    self._forget(own)
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.set()
                else:
                    self._leading = False

    def _forget(self, pending: _Pending[C, R]) -> None:
        """`pending` leaves the queue if it is still there (the caller holds the lock)."""
        with contextlib.suppress(ValueError):
            self._queue.remove(pending)

    def _run(self, batch: list[_Pending[C, R]]) -> None:
        """Set each command's result or error (the caller wakes the waiters)."""
        try:
            results = self._commit([pending.command for pending in batch])
        except CommitOutcomeUnknown as exc:
            for pending in batch:
                pending.error = exc
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            metrics.LEDGER_BATCH_SPLITS.labels(self.name).inc()
            logger.warning(
                "batch failed; splitting it to find the command that fails",
                extra={"batcher": self.name, "size": len(batch), "error": type(exc).__name__},
            )
            middle = len(batch) // 2
            self._run(batch[:middle])
            self._run(batch[middle:])
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result

    def _commit(self, commands: list[C]) -> list[R]:
        """One durable transaction for `commands`, re-run on a deadlock or serialization
        failure, never after its COMMIT was sent."""
        metrics.LEDGER_BATCH_SIZE.labels(self.name).observe(len(commands))
        started = time.perf_counter()

        def attempt() -> list[R]:
            if not connection.in_atomic_block and connection.errors_occurred:
                # A connection of this thread that broke in an earlier batch is replaced
                # before this one (a thread that leads again keeps its connection otherwise).
                if connection.connection is not None and not connection.is_usable():
                    connection.close()
                connection.errors_occurred = False
            sent = False
            try:
                with atomic():
                    executed = self.execute(commands)
                    if self.before_commit is not None:
                        self.before_commit()
                    # The writes and the COMMIT in one round trip; a connection that breaks
                    # on the way raises CommitOutcomeUnknown (walletsite.db.pipelined).
                    pipelined(*executed.writes, commit=True)
                    sent = True
            except (OperationalError, InterfaceError) as exc:
                if sent:  # what fails after the COMMIT was answered must not run the batch again
                    raise CommitOutcomeUnknown("the connection failed after COMMIT") from exc
                raise
            return executed.results

        try:
            return with_retries(attempt)
        finally:
            metrics.LEDGER_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
