"""Prometheus metrics. Under gunicorn every worker process writes its samples to
PROMETHEUS_MULTIPROC_DIR (set by the supervisor), and /metrics adds them up, so the numbers are
right whichever worker answers the scrape."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("wallet_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "wallet_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEDGER_TRANSACTIONS = Counter("wallet_ledger_transactions_total", "Ledger transactions posted", ["type"])
LEDGER_REJECTIONS = Counter("wallet_ledger_rejections_total", "Posting commands refused", ["code"])
LEDGER_BATCH_SIZE = Histogram(
    "wallet_ledger_batch_size",
    "Commands per group-commit batch (one database transaction)",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
LEDGER_BATCH_SECONDS = Histogram(
    "wallet_ledger_batch_seconds", "Time of one group-commit batch's database transaction", ["batcher"]
)
LEDGER_BATCH_SPLITS = Counter(
    "wallet_ledger_batch_splits_total", "Batches split after their database work failed", ["batcher"]
)
LEDGER_MOVED = Counter("wallet_ledger_moved_minor_total", "Minor units moved by posted transactions", ["type"])
OUTBOX_DELIVERED = Counter("wallet_outbox_delivered_total", "Outbox events delivered", ["type"])
OUTBOX_FAILURES = Counter("wallet_outbox_failures_total", "Outbox deliveries that failed and will retry", ["type"])
RECONCILIATION_MISMATCHES = Gauge(
    "wallet_reconciliation_mismatches",
    "Mismatches found by the last reconciliation run",
    multiprocess_mode="mostrecent",
)
RECONCILIATION_RUNS = Counter("wallet_reconciliation_runs_total", "Reconciliation runs", ["result"])
OUTBOX_CLAIMED = Counter("wallet_outbox_claimed_total", "Outbox events handed to a worker (retries included)")
WORKER_JOB_RUNS = Counter("wallet_worker_job_runs_total", "Periodic worker jobs run", ["job", "result"])
WORKER_JOB_DURATION = Histogram(
    "wallet_worker_job_duration_seconds",
    "Time a periodic worker job took",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
# Rate limits (walletsite.throttles). A check the counter store could not answer lets the
# request through (fail open): store_errors counts the failed calls, fail_open every check
# skipped (the failed ones, and those skipped at once while the store's breaker is open).
THROTTLED = Counter("wallet_throttled_requests_total", "Requests refused with 429 rate_limited", ["scope"])
THROTTLE_STORE_ERRORS = Counter(
    "wallet_throttle_store_errors_total", "Rate-limit counter store calls that failed", ["store"]
)
THROTTLE_FAIL_OPEN = Counter(
    "wallet_throttle_fail_open_total", "Rate-limit checks skipped because the counter store failed", ["store"]
)


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric, and its content type.

    With PROMETHEUS_MULTIPROC_DIR set (gunicorn under `make run`, and the worker beside it),
    each process writes its samples to files there and the answer adds up every process's
    files, so the numbers do not depend on which gunicorn worker answers the scrape. The
    variable belongs to prometheus_client, which reads it itself when it is first imported;
    it is not a setting of ours.
    """
    import os

    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
