"""The service's processes under the harness, which supervises them the way an operator's
supervisor would, and the crashes it inflicts on them.

The harness starts the embedded PostgreSQL (walletsite.embedded_pg, durable: fsync on, so an
immediate shutdown leaves real crash recovery to do), runs the migrations, then starts gunicorn
(walletsite/gunicorn_conf.py) and the background workers (`manage.py run_worker`) as children in
sessions of their own, with the run's environment. The crashes:

- a gunicorn worker: SIGKILL; the gunicorn master starts a new one by itself;
- the gunicorn master: SIGKILL, then either its workers are SIGKILLed too (a container runtime
  kills everything when its main process dies) or they are left to notice that their parent is
  gone and finish on their own (a supervisor that kills only the main process); the harness
  starts a new master once the port is free;
- a background worker (the run has CHAOS_WORKERS of them, as an operator runs several): SIGKILL,
  started again at once;
- PostgreSQL: `pg_ctl stop -m fast` (sessions ended, checkpoint) or `-m immediate` (no
  checkpoint: crash recovery on the next start), down for a moment, started again. Nothing else
  is restarted: gunicorn and the worker must come back to it by themselves.

After each one, the time until /readyz answers 200 again is recorded (and, after a gunicorn
worker's death, until the master runs a full set again). A child that exits without being
killed is a violation; the harness records it and starts it again.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from chaos.net import Stats, Violations
from walletsite import config, embedded_pg
from walletsite.serve import _port_free

ROOT = config.BASE_DIR
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "walletsite" / "gunicorn_conf.py")]
WORKER = [sys.executable, "manage.py", "run_worker"]
# gunicorn's graceful_timeout (20 s) and a little more: an orphaned worker gone by then
# finished on its own.
ORPHAN_LIMIT_SECONDS = 25.0
PORT_WAIT_SECONDS = 30.0
STOP_SECONDS = 60.0


@dataclass
class Recovery:
    what: str
    # Until /readyz answered 200, and until gunicorn ran a full set of workers again.
    seconds: float
    detail: str
    full_seconds: float


class Service:
    def __init__(
        self,
        *,
        work: Path,
        env: dict[str, str],
        port: int,
        web_concurrency: int,
        workers: int,
        ready_limit: float,
        stats: Stats,
        violations: Violations,
    ) -> None:
        self.work = work
        self.env = env
        self.port = port
        self.web_concurrency = web_concurrency
        self.worker_count = workers
        self.ready_limit = ready_limit
        self.stats = stats
        self.violations = violations
        self.pgdata = work / "pg"
        self.lock = threading.RLock()
        self.web: subprocess.Popen | None = None
        # The background workers (`manage.py run_worker`), as many as an operator runs.
        self.workers: list[subprocess.Popen] = []
        self.recoveries: list[Recovery] = []
        self._orphans: list[tuple[psutil.Process, float]] = []
        self._watching = False
        self._watcher: threading.Thread | None = None

    # -- starting and stopping --------------------------------------------------------------

    def _log(self, name: str):
        return open(self.work / f"{name}.log", "ab")

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        with self._log(name) as log:
            return subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """A management command with the run's environment, its output captured."""
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )

    def postgres_start(self) -> None:
        embedded_pg.ensure_running(self.pgdata, durable=True)

    def postgres_stop(self, mode: str) -> None:
        embedded_pg.stop(self.pgdata, mode=mode)

    def migrate(self) -> None:
        # prometheus_client writes every process's samples here (walletsite.serve makes it too).
        Path(self.env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        done = self.manage("migrate", "--noinput")
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + PORT_WAIT_SECONDS
        while not _port_free("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still in use {PORT_WAIT_SECONDS:.0f} s after gunicorn died")
            time.sleep(0.05)

    def start_web(self) -> None:
        with self.lock:
            self._wait_for_port()
            self.web = self._spawn(GUNICORN, "web")

    def start_worker(self, slot: int) -> None:
        with self.lock:
            proc = self._spawn(WORKER, f"worker{slot}")
            if slot < len(self.workers):
                self.workers[slot] = proc
            else:
                self.workers.append(proc)

    def start(self) -> None:
        self.postgres_start()
        self.migrate()
        self.start_web()
        self.wait_ready()
        for slot in range(self.worker_count):
            self.start_worker(slot)
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, name="process-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """SIGTERM gunicorn and the worker and wait for them (what `make stop` does), then
        SIGKILL what is left."""
        self._watching = False
        if self._watcher is not None:
            self._watcher.join()
        with self.lock:
            for proc in (self.web, *self.workers):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (self.web, *self.workers):
                if proc is None:
                    continue
                try:
                    proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    self.violations.add(f"{proc.args[-1]} did not stop within {STOP_SECONDS:.0f} s of SIGTERM")
                    self._kill_tree(proc.pid)
                    proc.wait()
            for orphan, _ in self._orphans:
                if orphan.is_running():
                    orphan.kill()

    def kill_everything(self) -> None:
        """After a failure of the harness itself: leave nothing running."""
        self._watching = False
        for proc in (self.web, *self.workers):
            if proc is not None and proc.poll() is None:
                self._kill_tree(proc.pid)
                proc.wait()
        for orphan, _ in self._orphans:
            if orphan.is_running():
                orphan.kill()
        self.postgres_stop("immediate")

    @staticmethod
    def _kill_tree(pid: int) -> None:
        try:
            parent = psutil.Process(pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for proc in [parent, *children]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    # -- watching ---------------------------------------------------------------------------

    def _watch(self) -> None:
        """A child that exits on its own is a violation: start it again, as a supervisor would."""
        while self._watching:
            with self.lock:
                try:
                    if self.web is not None and self.web.poll() is not None:
                        self.violations.add(f"the gunicorn master exited on its own (exit {self.web.returncode})")
                        self.start_web()
                    for slot, worker in enumerate(self.workers):
                        if worker.poll() is not None:
                            self.violations.add(f"a background worker exited on its own (exit {worker.returncode})")
                            self.start_worker(slot)
                    self._check_orphans()
                except Exception as exc:
                    self.violations.add(f"the harness could not restart a process: {type(exc).__name__}: {exc}")
            time.sleep(0.2)

    def _check_orphans(self) -> None:
        left = []
        for orphan, since in self._orphans:
            try:
                alive = orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                continue
            if time.monotonic() - since > ORPHAN_LIMIT_SECONDS:
                self.violations.add(
                    f"gunicorn worker {orphan.pid} still running {ORPHAN_LIMIT_SECONDS:.0f} s after its master died"
                )
                orphan.kill()
                continue
            left.append((orphan, since))
        self._orphans = left

    def web_workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.web.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        return alive

    # -- readiness --------------------------------------------------------------------------

    def ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_ready(self, *, full_set: bool = False, limit: float = 120.0) -> float:
        """Seconds until /readyz answers 200 (and, with `full_set`, gunicorn runs all its
        workers again); infinity after `limit`."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.ready() and (not full_set or len(self.web_workers()) >= self.web_concurrency):
                return time.monotonic() - started
            time.sleep(0.05)
        return float("inf")

    def _recovered(self, what: str, since: float, detail: str) -> Recovery:
        """Wait for /readyz, then for a full set of gunicorn workers; a violation when /readyz
        took longer than the limit."""
        never = float("inf")
        seconds = never if self.wait_ready() == never else time.monotonic() - since
        full = never if seconds == never or self.wait_ready(full_set=True) == never else time.monotonic() - since
        recovery = Recovery(what, seconds, detail, full)
        self.recoveries.append(recovery)
        if seconds > self.ready_limit:
            self.violations.add(
                f"after {what} ({detail}) /readyz answered 200 only after {seconds:.1f} s "
                f"(limit {self.ready_limit:.0f} s)"
            )
        return recovery

    # -- crashes ----------------------------------------------------------------------------

    CRASHES = {
        "gunicorn_worker": "a gunicorn worker's SIGKILL",
        "gunicorn_master": "the gunicorn master's SIGKILL",
        "background_worker": "a background worker's SIGKILL",
    }

    def crash(self, kind: str, rng) -> str:
        """SIGKILL a process of `kind` and start again what a supervisor starts again (the
        gunicorn master starts its workers itself); say what was done. Does not wait."""
        with self.lock:
            if kind == "gunicorn_worker":
                victim = rng.choice(self.web_workers())
                victim.kill()
                detail = f"pid {victim.pid}"
            elif kind == "gunicorn_master":
                group = rng.random() < 0.5
                workers = self.web_workers()
                self.web.kill()
                self.web.wait()
                if group:
                    for worker in workers:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            worker.kill()
                else:
                    self._orphans.extend((worker, time.monotonic()) for worker in workers)
                self.start_web()
                self.stats.add("crash_gunicorn_master_with_workers" if group else "crash_gunicorn_master_alone")
                detail = "its workers killed too" if group else "its workers left to stop on their own"
            elif kind == "background_worker":
                slot = rng.randrange(len(self.workers))
                victim = self.workers[slot]
                victim.kill()
                victim.wait()
                self.start_worker(slot)
                detail = f"pid {victim.pid}; pid {self.workers[slot].pid} started"
            else:
                raise ValueError(f"no crash called {kind!r}")
        self.stats.add(f"crash_{kind}")
        return detail

    def crash_and_recover(self, kind: str, rng) -> Recovery:
        since = time.monotonic()
        detail = self.crash(kind, rng)
        return self._recovered(self.CRASHES[kind], since, detail)

    def restart_postgres(self, mode: str, down_seconds: float, *, rng, crash: str | None = None) -> Recovery:
        """Stop PostgreSQL (fast or immediate), keep it down for a moment (during which `crash`
        happens too, if given), start it again; readiness is counted from the start."""
        since = time.monotonic()
        self.postgres_stop(mode)
        stopped = time.monotonic()
        time.sleep(down_seconds / 2)
        if self.ready():
            self.violations.add("/readyz answered 200 while PostgreSQL was down")
        detail = f"stop took {stopped - since:.1f} s"
        if crash is not None:
            detail += f", and {self.CRASHES[crash]} while it was down ({self.crash(crash, rng)})"
        time.sleep(down_seconds / 2)
        self.postgres_start()
        up = time.monotonic()
        self.stats.add(f"postgres_restart_{mode}")
        return self._recovered(f"PostgreSQL's {mode} shutdown", up, f"down {up - stopped:.1f} s, {detail}")


def service_env(
    *, work: Path, port: int, bank_url: str, secrets: dict[str, str], extra: dict[str, str]
) -> dict[str, str]:
    """The service's environment for the run (walletsite/config.py reads it)."""
    sock = embedded_pg.socket_dir((work / "pg").resolve())
    # Only what a process needs from the caller's environment: nothing of the caller's own
    # wallet configuration leaks into the run.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") if key in os.environ}
    env.update(secrets)
    env.update(
        {
            "DJANGO_ENV": "development",
            "DATA_DIR": str(work / "data"),
            # A socket URL, so no command starts the embedded server by itself: only the
            # harness starts and stops PostgreSQL (manage.py would start it when it is down).
            "DATABASE_URL": f"postgresql://postgres@localhost:{embedded_pg.PORT}/wallet?host={quote(str(sock))}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BANK_URL": bank_url,
            "PROMETHEUS_MULTIPROC_DIR": str(work / "data" / "prometheus"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env
