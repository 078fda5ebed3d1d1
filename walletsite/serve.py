"""`make run`: the whole service in one terminal, `python -m walletsite.serve`.

The supervisor starts, in order: the embedded PostgreSQL when DATABASE_URL is not set (data
in DATA_DIR/pg, fsync on), the migrations, gunicorn (walletsite/gunicorn_conf.py) and, once
gunicorn answers /readyz, the background worker (`manage.py run_worker`). It prints one line
with the URLs when the service is ready.

Ctrl-C (SIGINT) or SIGTERM stops everything in order: gunicorn first (it stops accepting and
finishes in-flight requests within its graceful_timeout), then the worker (it finishes its
current step), then PostgreSQL if this supervisor started it. A second Ctrl-C kills what is
still being waited for. If gunicorn or the worker dies on its own, the rest is stopped the
same way and the supervisor exits 1.

The children run in sessions of their own, so Ctrl-C in the terminal reaches only the
supervisor (gunicorn treats SIGINT as "quit now", which would cut in-flight requests), and
they ask the kernel for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so even a SIGKILL
of the supervisor leaves no server holding the port. PostgreSQL is left running then; the next
start finds it, reuses it and stops it at its own end.

`python -m walletsite.serve stop` sends SIGTERM to a running supervisor of the same DATA_DIR
and waits for it to finish (`make stop`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import fasteners

from walletsite import config, embedded_pg

ROOT = config.BASE_DIR
# gunicorn's graceful_timeout is 20 s; after that it kills its own workers. A little more
# here before the supervisor kills gunicorn itself.
WEB_STOP_SECONDS = 25.0
# The worker finishes the step it is in (a batch of outbox deliveries or one periodic job).
WORKER_STOP_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 120.0
PORT_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1

_PR_SET_PDEATHSIG = 1


class StartupFailed(Exception):
    """A step of the start-up failed; the message says which."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while starting up."""


def _say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def _die_with(parent_pid: int):
    """preexec_fn for the children: SIGTERM when the supervisor dies, however it dies."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # The supervisor may have died between fork and prctl, which then never fires.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _probe_host(host: str) -> str:
    """Where to connect to reach a server bound to `host`."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - an address to connect to, not to bind
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As gunicorn binds: SO_REUSEADDR, so connections of an earlier server still in
        # TIME_WAIT do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class Supervisor:
    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.signals = 0
        self.pgdata = cfg.data_dir / "pg"
        self.stop_postgres = False
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.env = dict(os.environ)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(cfg.data_dir / "prometheus")
        # Log lines reach the terminal as they are written, not when a buffer fills.
        self.env["PYTHONUNBUFFERED"] = "1"
        host = _probe_host(cfg.host)
        self.probe_url = f"http://{f'[{host}]' if ':' in host else host}:{cfg.port}/readyz"

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _check_interrupted(self) -> None:
        if self.signals:
            raise Interrupted

    # -- children ------------------------------------------------------------------------

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            # preexec_fn is safe here: the supervisor runs no threads.
            preexec_fn=_die_with(os.getpid()),
        )

    def _wait_step(self, name: str, args: list[str]) -> None:
        """Run a one-off command to its end, still answering signals meanwhile."""
        proc = self._spawn(args)
        while proc.poll() is None:
            if self.signals:
                self._stop(name, proc, WEB_STOP_SECONDS)
                raise Interrupted
            time.sleep(POLL_SECONDS)
        if proc.returncode != 0:
            raise StartupFailed(f"{name} failed (exit {proc.returncode})")

    def _stop(self, name: str, proc: subprocess.Popen | None, grace: float) -> None:
        """SIGTERM, then wait up to `grace` seconds (less if another signal arrives), then
        SIGKILL."""
        if proc is None or proc.poll() is not None:
            return
        signals_before = self.signals
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None:
            if time.monotonic() > deadline or self.signals > signals_before:
                _say(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
                return
            time.sleep(POLL_SECONDS)

    # -- start-up steps ------------------------------------------------------------------

    def start_postgres(self, adopt: bool) -> None:
        if not self.cfg.database.embedded:
            return
        _say(f"starting the embedded PostgreSQL ({self.pgdata})")
        started = embedded_pg.ensure_running(self.pgdata, durable=True)
        # A server left behind by a supervisor that was killed is ours to stop as well.
        self.stop_postgres = started or adopt

    def reset_metrics_dir(self) -> None:
        directory = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    def migrate(self) -> None:
        self._wait_step("migrate", [sys.executable, "manage.py", "migrate", "--noinput", "-v", "1"])

    def wait_for_port(self) -> None:
        """A server that an earlier, killed supervisor left behind is finishing its graceful
        shutdown; wait for it instead of failing to bind."""
        deadline = time.monotonic() + PORT_WAIT_SECONDS
        said = False
        while not _port_free(self.cfg.host, self.cfg.port):
            self._check_interrupted()
            if time.monotonic() > deadline:
                raise StartupFailed(f"port {self.cfg.port} on {self.cfg.host} is in use by another program")
            if not said:
                _say(f"waiting for port {self.cfg.port} to be free")
                said = True
            time.sleep(0.2)

    def start_web(self) -> None:
        self.web = self._spawn([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "walletsite" / "gunicorn_conf.py")])

    def wait_ready(self) -> None:
        host = urlsplit(self.cfg.public_url).netloc
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            self._check_interrupted()
            if self.web.poll() is not None:
                raise StartupFailed(f"gunicorn exited during start-up (exit {self.web.returncode})")
            request = urllib.request.Request(self.probe_url, headers={"Host": host})  # noqa: S310 - our own http URL
            try:
                with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StartupFailed(f"{self.probe_url} did not answer 200 within {READY_TIMEOUT_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)

    def start_worker(self) -> None:
        self.worker = self._spawn([sys.executable, "manage.py", "run_worker"])

    # -- running -------------------------------------------------------------------------

    def supervise(self) -> int:
        """Until a signal (exit 0) or a child's death (exit 1)."""
        while not self.signals:
            for name, proc in (("gunicorn", self.web), ("the worker", self.worker)):
                if proc.poll() is not None:
                    _say(f"{name} exited unexpectedly (exit {proc.returncode}); stopping the rest")
                    return 1
            time.sleep(POLL_SECONDS)
        return 0

    def shutdown(self) -> None:
        if self.web is not None and self.web.poll() is None:
            _say("stopping gunicorn (in-flight requests finish first)")
        self._stop("gunicorn", self.web, WEB_STOP_SECONDS)
        if self.worker is not None and self.worker.poll() is None:
            _say("stopping the worker (its current step finishes first)")
        self._stop("the worker", self.worker, WORKER_STOP_SECONDS)
        if self.stop_postgres:
            _say("stopping PostgreSQL")
            embedded_pg.stop(self.pgdata, mode="fast")

    def ready_line(self) -> str:
        url = self.cfg.public_url
        return f"wallet is ready: {url}  admin: {url}/admin/  API docs: {url}/api/docs  (Ctrl-C stops)"


def _pidfile(cfg: config.Config) -> Path:
    return cfg.data_dir / "serve.pid"


def run(cfg: config.Config) -> int:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    lock = fasteners.InterProcessLock(str(cfg.data_dir / ".serve.lock"))
    if not lock.acquire(blocking=False):
        other = _pidfile(cfg).read_text().strip() if _pidfile(cfg).exists() else "?"
        _say(f"already running for {cfg.data_dir} (pid {other}); `make stop` stops it")
        return 1
    supervisor = Supervisor(cfg)
    supervisor.install_signal_handlers()
    pidfile = _pidfile(cfg)
    # A pid file that outlived its supervisor means that one was killed before its cleanup.
    adopt = pidfile.exists()
    pidfile.write_text(f"{os.getpid()}\n")
    code = 1
    try:
        supervisor.start_postgres(adopt)
        supervisor._check_interrupted()
        supervisor.reset_metrics_dir()
        supervisor.migrate()
        supervisor.wait_for_port()
        supervisor.start_web()
        supervisor.wait_ready()
        supervisor.start_worker()
        print(supervisor.ready_line(), flush=True)
        code = supervisor.supervise()
    except Interrupted:
        code = 0
    except StartupFailed as exc:
        _say(str(exc))
        code = 1
    finally:
        supervisor.shutdown()
        pidfile.unlink(missing_ok=True)
        lock.release()
    _say("stopped")
    return code


def stop(cfg: config.Config, timeout: float = WEB_STOP_SECONDS + WORKER_STOP_SECONDS + 30) -> int:
    pidfile = _pidfile(cfg)
    try:
        pid = int(pidfile.read_text().strip())
        # The pid of a killed supervisor may belong to another program by now.
        if b"walletsite.serve" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            raise ProcessLookupError(pid)
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        _say(f"not running for {cfg.data_dir}")
        return 0
    deadline = time.monotonic() + timeout
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if pidfile.exists():
        _say(f"pid {pid} has not stopped after {timeout:.0f} s")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args == ["stop"]:
        return stop(cfg)
    if args:
        print("usage: python -m walletsite.serve [stop]", file=sys.stderr)
        return 2
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
