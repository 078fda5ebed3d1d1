"""`make run` (walletsite.serve) for real: a supervisor with its own embedded PostgreSQL,
gunicorn and the worker, driven over HTTP and with signals.

These start real processes (about 2 s per start once the cluster exists), so they share one
data directory and are few: each checks as much as one start allows.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from walletsite import embedded_pg

ROOT = settings.BASE_DIR
READY = re.compile(r"^wallet is ready: (http://\S+)\s+admin: (\S+)\s+API docs: (\S+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Served:
    """One `python -m walletsite.serve`, its output collected line by line."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(
            DJANGO_ENV="development",
            DATA_DIR=str(data_dir),
            HOST="127.0.0.1",
            PORT=str(port),
            WEB_CONCURRENCY="2",
            WEB_THREADS="2",
        )
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        # A session of its own, as a terminal gives `make run` a process group of its own.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "walletsite.serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {regex.pattern!r}; output:\n{self.output()}")

    def get(self, path: str, **headers) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.base + path, headers=headers)  # noqa: S310 - our http URL
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(  # noqa: S310 - our http URL
            self.base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def children(self) -> dict[str, psutil.Process]:
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            cmdline = " ".join(child.cmdline())
            if "gunicorn" in cmdline:
                found["gunicorn"] = child
            elif "run_worker" in cmdline:
                found["worker"] = child
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "data"
    yield path
    embedded_pg.destroy(path / "pg")


@pytest.fixture
def serve(data_dir):
    started: list[Served] = []

    def start() -> Served:
        served = Served(data_dir, _free_port())
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.kill()
        # Whatever happened, leave no server behind on this data.
        for child in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(child.info["cmdline"] or [])
            if f"PORT={served.port}" in cmdline:
                child.kill()


def _wait_until(check, timeout: float = 20, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {check}")


def test_make_run_serves_everything_and_stops_in_order(serve, data_dir):
    # given: a fresh data directory, no DATABASE_URL
    served = serve()
    # when
    ready = served.wait_for(READY)
    # then: the line names the service, the admin and the docs
    assert ready.group(1) == served.base
    assert ready.group(2) == f"{served.base}/admin/"
    assert ready.group(3) == f"{served.base}/api/docs"
    assert served.get("/readyz")[0] == 200
    # and the schema's first requests in fresh processes, all at once, all succeed
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: served.get("/api/schema?format=json")[0], range(16)))
    assert statuses == [200] * 16
    assert served.get("/admin/login/")[0] == 200
    assert served.get("/static/admin/css/base.css")[0] == 200
    # and a second supervisor on the same data refuses to start
    other = subprocess.run(
        [sys.executable, "-m", "walletsite.serve"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DJANGO_ENV": "development",
            "DATA_DIR": str(data_dir),
            "PORT": str(_free_port()),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode == 1 and "already running" in other.stderr

    # when: requests land on both gunicorn workers
    for _ in range(40):
        assert served.get("/healthz")[0] == 200

    # then: /metrics adds up every worker's counts, and shows the background worker's too
    def metrics() -> str:
        return served.get("/metrics")[1].decode()

    count = re.search(r'wallet_http_requests_total\{method="GET",route="healthz",status="200"\} (\S+)', metrics())
    assert count and float(count.group(1)) == 40
    # (the worker runs its jobs right after it starts, which is just after the ready line)
    job_ran = re.compile(r'wallet_worker_job_runs_total\{job="reconciliation",result="ok"\} 1\.0')
    _wait_until(lambda: job_ran.search(metrics()))

    # when: PostgreSQL goes away under the running service
    embedded_pg.stop(data_dir / "pg", mode="immediate")
    # then: not ready (within the readiness timeout), while still alive
    status, body, headers = served.get("/readyz")
    assert status == 503 and json.loads(body)["code"] == "service_unavailable"
    assert headers["Retry-After"] == "5"
    assert served.get("/healthz")[0] == 200
    served.wait_for('"message": "database unavailable; the worker retries"')
    # and ready again once it is back, with nothing restarted
    embedded_pg.ensure_running(data_dir / "pg")
    _wait_until(lambda: served.get("/readyz")[0] == 200)
    assert served.proc.poll() is None

    # when: SIGTERM (as Ctrl-C's SIGINT)
    code = served.stop(signal.SIGTERM)
    # then: everything stopped, in order
    assert code == 0, served.output()
    out = served.output()
    order = [
        out.index(s) for s in ("stopping gunicorn", "stopping the worker", "stopping PostgreSQL", "serve: stopped")
    ]
    assert order == sorted(order)
    assert '"message": "worker stopped"' in out
    assert not embedded_pg._is_running(data_dir / "pg")
    assert not _port_in_use(served.port)
    assert not (data_dir / "serve.pid").exists()


def test_a_child_that_dies_stops_the_rest_and_exits_1(serve, data_dir):
    # given
    served = serve()
    served.wait_for(READY)
    children = served.children()
    # when: the worker dies on its own
    children["worker"].kill()
    # then
    code = served.stop(signal.SIGCONT, timeout=60)  # no signal of ours: just wait
    assert code == 1, served.output()
    assert "the worker exited unexpectedly" in served.output()
    assert not children["gunicorn"].is_running() or children["gunicorn"].status() == psutil.STATUS_ZOMBIE
    assert not embedded_pg._is_running(data_dir / "pg")
    assert not _port_in_use(served.port)


def test_after_a_sigkill_of_everything_the_next_start_reuses_the_data(serve, data_dir):
    # given: a running service with a registered user
    served = serve()
    served.wait_for(READY)
    status, _ = served.post(
        "/api/v1/auth/register", {"email": "survivor@example.com", "password": "correct horse", "pin": "2468"}
    )
    assert status == 201
    web = served.children()["gunicorn"]
    # when: the whole process group is killed (kill -9 -- -PGID)
    served.kill()
    # then: the children go with it (SIGTERM from the kernel), PostgreSQL is left running
    web.wait(30)
    _wait_until(lambda: not _port_in_use(served.port))
    assert embedded_pg._is_running(data_dir / "pg")
    # when: started again on the same data
    again = serve()
    again.wait_for(READY)
    # then: the data is there, and this run stops the server it adopted
    status, body = again.post("/api/v1/auth/login", {"email": "survivor@example.com", "password": "correct horse"})
    assert status == 200 and body["token_type"] == "Bearer"
    assert again.stop() == 0
    assert not embedded_pg._is_running(data_dir / "pg")


def test_gunicorn_workers_stop_serving_as_soon_as_their_master_is_killed(tmp_path):
    """The workers of a SIGKILLed gunicorn master are told to stop (gunicorn_conf's post_fork
    asks the kernel for SIGTERM when the master dies) and close their kept-alive connections.
    gunicorn's own parent check left them serving those connections until graceful_timeout
    ran out, holding the port all along: a master started again could not bind it for 20 s
    (found by the chaos suite)."""
    # given: gunicorn with the project's settings, and a client on a kept-alive connection
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "walletsite" / "gunicorn_conf.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def healthz() -> str | None:
        """The answer's Connection header ("" when absent); None when the connection failed."""
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        return response.getheader("Connection", "")

    worker = None
    try:
        _wait_until(lambda: healthz() is not None, timeout=60)
        (worker,) = psutil.Process(master.pid).children()
        # when: the master is killed
        master.kill()
        master.wait()
        # then: the worker answers on the kept-alive connection with Connection: close...
        answers = []
        while (answer := healthz()) is not None:
            answers.append(answer)
            if answer.lower() == "close":
                break
        assert answers and answers[-1].lower() == "close", f"{len(answers)} answers kept the connection alive"
        # ...and exits
        worker.wait(60)
    finally:
        conn.close()
        if master.poll() is None:
            master.kill()
            master.wait()
        if worker is not None and worker.is_running():
            worker.kill()
