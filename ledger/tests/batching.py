"""Queueing commands behind a held batch, for the group-commit tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ledger.batcher import Batcher


def queue_in_order(pool: ThreadPoolExecutor, batcher: Batcher, calls: list[Callable[[], object]]) -> list[Future]:
    """Run each call on `pool` once the one before it has queued in `batcher` (whose batch in
    flight is held), so that they queue in the order given."""
    futures: list[Future] = []
    for call in calls:
        futures.append(pool.submit(call))
        deadline = time.monotonic() + 30
        while len(batcher._queue) < len(futures):
            assert time.monotonic() < deadline, "the commands did not queue"
            time.sleep(0.002)
    return futures
