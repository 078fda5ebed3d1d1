"""gunicorn settings, for `make run` (walletsite.serve) and the `web` container alike:
`gunicorn -c walletsite/gunicorn_conf.py`.

Why gthread, 2 workers x 32 threads by default: the request code is synchronous and spends
most of its time waiting for PostgreSQL, so threads overlap those waits cheaply, while a
process per core (2 on the machines we size for) uses both cores for the Python work between
them. Async views are no option: Django cannot hold a database transaction across an await.
Transfers wait for their process's group-commit batch (ledger.batcher), and the more of them
wait at once, the larger and cheaper per transfer the next batch: in one bench run on this
2-core machine (64 connections, uniform P2P), 2 x 8 threads moved 199 transfers/s and
2 x 32 moved 356/s, with 3.7 and 2.4 ms of server CPU per transfer (README "Benchmark").
WEB_CONCURRENCY and WEB_THREADS change the numbers; each process's database pool holds up to
WEB_THREADS + 4 connections, opened only when needed (a waiting transfer holds none).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# gunicorn loads this file by path, so the project root may not be on sys.path yet.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from gunicorn.glogging import Logger  # noqa: E402

from walletsite import config as _config  # noqa: E402
from walletsite.serve import _die_with  # noqa: E402

try:
    _CONFIG = _config.load()
except _config.ConfigError as exc:
    raise SystemExit(f"configuration error: {exc}") from None

# prometheus_client reads this when it is first imported, which in the workers happens after
# this file runs: every worker then writes its samples there and /metrics adds them up. The
# supervisor (walletsite.serve) sets it already; a bare `gunicorn -c` (the web container)
# gets the same directory under DATA_DIR.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_CONFIG.data_dir / "prometheus"))

wsgi_app = "walletsite.wsgi:application"
chdir = str(_ROOT)
# An IPv6 address binds in brackets: [::]:8000.
bind = [f"[{_CONFIG.host}]:{_CONFIG.port}" if ":" in _CONFIG.host else f"{_CONFIG.host}:{_CONFIG.port}"]
worker_class = "gthread"
workers = _CONFIG.web_concurrency
threads = _CONFIG.web_threads
# A request taking longer than this has its worker killed and restarted: the longest route
# (a statement month, a reconciliation) stays well under it.
timeout = 30
# On SIGTERM, in-flight requests get this long to finish; the supervisor and the container's
# stop_grace_period wait a little longer than this before SIGKILL.
graceful_timeout = 20
# An idle keep-alive connection waits in gthread's poller, not in a thread, so a client's
# next request can reuse it at little cost (gunicorn's default is 2 s).
keepalive = 5
# Every request is already logged as one JSON line (walletsite.middleware) with its request
# id, so gunicorn's own access log would only repeat it in another format.
accesslog = None
errorlog = "-"
loglevel = _CONFIG.log_level.lower()


class JsonLogger(Logger):
    """gunicorn's own lines (start, worker boots, signals) as the same JSON lines as the
    application's, so one log pipeline reads both."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from walletsite.logs import JsonFormatter

        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl),
# which two servers of one user (a test run beside `make run`) would fight over.
control_socket_disable = True
proc_name = "wallet-web"


def _multiproc_dir() -> Path:
    return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server) -> None:
    """Before any worker starts: an empty metrics directory, since files left by processes of
    an earlier run would be counted forever."""
    directory = _multiproc_dir()
    if directory.exists():
        for child in directory.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)


def post_fork(server, worker) -> None:
    """A worker stops, as on SIGTERM, as soon as its master dies, however the master dies.

    gunicorn's own check (the worker's parent changed) breaks the worker's loop without
    marking it as stopping, so it goes on serving its kept-alive connections at their full
    keep-alive time until graceful_timeout runs out, all the while holding the listening
    socket: a master restarted after a SIGKILL could not bind the port for 20 s (found by the
    chaos suite). With PR_SET_PDEATHSIG the kernel sends the worker SIGTERM when its master
    dies: in-flight requests finish, kept-alive connections close within a couple of
    seconds, and the port is free for the next master."""
    _die_with(server.pid)()


def post_worker_init(worker) -> None:
    """The worker has loaded the application: import every view now (the URLconf names
    them all), then move everything alive at this point out of the garbage collector's
    reach (gc.freeze). Those objects (modules, classes, settings, caches) live as long as
    the process, and a full collection would otherwise walk all ~100,000 of them, holding
    every thread of the worker for 60-80 ms on this machine."""
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the views
    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    """A worker exited: its live gauges stop counting (its counters stay, as Prometheus
    expects counters to)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
