"""Rate limits are one allowance across processes: two real gunicorn servers (each its own
process, as every gunicorn worker is) on the test database, and the requests of one client
alternating between them. Without REDIS_URL the count lives in PostgreSQL; with it, in Redis
(a real one: REDIS_URL or redis://127.0.0.1:6379; skipped with the reason printed where there
is none, a failure under REQUIRE_REDIS=1). A per-process count would let 3 + 3 through; one
shared count lets 3.

Each test's client speaks from a loopback address of its own (any of 127.0.0.0/8 reaches the
servers), so test runs sharing one Redis never share a key.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from wallets.models import ThrottleCounter
from walletsite.testing import redis_url_or_skip

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)
RATE = 3
START_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}@localhost:{db['PORT']}/{db['NAME']}?host={quote(db['HOST'])}"


class Server:
    """One gunicorn (1 worker) on the test database; its output is kept for failures."""

    def __init__(self, name: str, metrics_dir: Path, **env: str) -> None:
        self.name = name
        self.port = _free_port()
        environ = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "REDIS_URL")}
        environ.update(
            DATABASE_URL=_test_database_url(),
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            WEB_THREADS="2",
            RATE_LIMITS=f"webhook={RATE}/hour",
            # Each gunicorn empties its metrics directory when it starts: one each.
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "walletsite" / "gunicorn_conf.py")],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self.proc.poll() is None, "gunicorn exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, "gunicorn did not answer:\n" + "\n".join(self.lines)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)

    def webhook(self, source_ip: str) -> int:
        """A gateway webhook with a bad signature (400 invalid_signature, or 429) from this
        client address: cheap, and it changes nothing."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(source_ip, 0))
        try:
            headers = {"Content-Type": "application/json", "Gateway-Signature": "t=1,v1=00"}
            conn.request("POST", "/api/v1/webhooks/gateway", body=b"{}", headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _client_address() -> str:
    # Not 127.0.0.1, which every other client on the machine uses.
    return f"127.{random.randint(100, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"


@pytest.fixture
def servers(tmp_path):
    """start(**env) -> two servers A and B, running and ready; stopped after the test."""
    started: list[Server] = []

    def start(**env: str) -> tuple[Server, Server]:
        pair = tuple(Server(name, tmp_path / f"metrics-{name}", **env) for name in ("A", "B"))
        started.extend(pair)
        for server in pair:
            server.wait_ready()
        return pair

    yield start
    for server in started:
        server.stop()


def _alternate(a: Server, b: Server, source_ip: str) -> list[tuple[str, int]]:
    return [(server.name, server.webhook(source_ip)) for server in (a, b) * RATE]


# Both servers let requests through until their combined count reaches the rate.
SHARED = [("A", 400), ("B", 400), ("A", 400), ("B", 429), ("A", 429), ("B", 429)]


def test_two_processes_share_one_allowance_in_postgresql(servers):
    # given: two servers without Redis
    a, b = servers()
    client = _client_address()
    # when: one client alternates between them, twice the rate
    answers = _alternate(a, b, client)
    # then: 3 in all got through, not 3 each; one row holds the count of all 6
    assert answers == SHARED, answers
    assert ThrottleCounter.objects.get(key=f"webhook:ip:{client}").hits == 2 * RATE


def test_two_instances_share_one_allowance_in_redis(servers):
    # given: two servers, as two instances would run, with one Redis
    url = redis_url_or_skip()
    a, b = servers(REDIS_URL=url)
    client = _client_address()
    import redis

    redis_client = redis.Redis.from_url(url)
    # The key as django-redis makes it (no KEY_PREFIX, version 1).
    key = f":1:throttle:webhook:ip:{client}"
    try:
        # when
        answers = _alternate(a, b, client)
        # then: the same, counted in Redis and not in PostgreSQL
        assert answers == SHARED, answers
        assert int(redis_client.get(key)) == 2 * RATE
        assert 0 < redis_client.pttl(key) <= 3600 * 1000
        assert not ThrottleCounter.objects.exists()
    finally:
        redis_client.delete(key)
