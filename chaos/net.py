"""HTTP for the chaos run: keep-alive connections, retries until a definitive answer, and the
run's shared counters, violations and timer queue.

A definitive answer is a 2xx, or a 4xx other than 409 idempotency_key_in_use and 429: those
two say "not yet", as does any 5xx, a connection refused or cut, or a timeout. A client that
has not had a definitive answer does not know whether its request took effect, so it sends the
same request again (the same Idempotency-Key and body, the same event id) until it gets one.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# gunicorn kills a request after 30 s (walletsite/gunicorn_conf.py): a little more here.
REQUEST_TIMEOUT_SECONDS = 35.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    def same_as(self, other: Answer) -> bool:
        return self.status == other.status and canonical(self.body) == canonical(other.body)

    def brief(self) -> str:
        return f"{self.status} {canonical(self.body)[:300]}"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class NoAnswer(Exception):
    """The request got no HTTP answer (refused, cut, timed out)."""


class GaveUp(Exception):
    """No definitive answer within the run's limit."""


class Stats:
    """Counters shared by every thread of the run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Violations:
    """Everything the run found wrong; the run fails when there is any."""

    KEPT = 100

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.messages) < self.KEPT:
                self.messages.append(message)


class Connection:
    """One keep-alive HTTP/1.1 connection; a request that fails closes it and the next one
    connects again."""

    def __init__(self, host: str, port: int, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Answer:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        sent = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        try:
            self._conn.request(method, path, body=body, headers=sent)
            response = self._conn.getresponse()
            raw = response.read()
            replayed = response.getheader("Idempotent-Replayed") == "true"
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return Answer(response.status, parsed, replayed)


def definitive(answer: Answer) -> bool:
    if answer.status >= 500 or answer.status == 429:
        return False
    return not (answer.status == 409 and answer.code == "idempotency_key_in_use")


class Client:
    """Sends a request until it has a definitive answer, counting what it took."""

    def __init__(self, *, host: str, port: int, stats: Stats, limit_seconds: float, rng: random.Random) -> None:
        self.conn = Connection(host, port)
        self.stats = stats
        self.limit_seconds = limit_seconds
        self.rng = rng

    def close(self) -> None:
        self.conn.close()

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict | Callable[[bytes | None], dict] | None = None,
        *,
        raw: bytes | None = None,
    ) -> Answer:
        """`headers` may be a function of the body, called for every attempt (a webhook's
        signature must be fresh on a retry after a long outage)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        deadline = time.monotonic() + self.limit_seconds
        pause = 0.05
        while True:
            sent_headers = headers(data) if callable(headers) else (headers or {})
            self.stats.add("http_requests")
            try:
                answer = self.conn.request(method, path, data, sent_headers)
            except NoAnswer:
                self.stats.add("no_answer")
                answer = None
            if answer is not None:
                if answer.replayed:
                    self.stats.add("replayed_answers")
                if definitive(answer):
                    return answer
                self.stats.add(f"not_yet_{answer.status}")
            if time.monotonic() > deadline:
                last = answer.brief() if answer else "no answer"
                raise GaveUp(f"{method} {path}: no definitive answer in {self.limit_seconds:.0f} s (last: {last})")
            self.stats.add("retries")
            time.sleep(pause * (0.5 + self.rng.random()))
            pause = min(pause * 1.6, 1.0)


class Timers:
    """Work to do later (late retries, delayed bank settlements), run by a few threads."""

    def __init__(self, *, threads: int, name: str) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._busy = 0
        self._closing = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        self.errors: list[str] = []
        for thread in self._threads:
            thread.start()

    def after(self, seconds: float, job: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), job))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._busy

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing and not self._heap:
                        return
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        _, _, job = heapq.heappop(self._heap)
                        self._busy += 1
                        break
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else 0.5
                    self._cond.wait(max(0.01, min(timeout, 0.5)))
            try:
                job()
            except Exception as exc:  # a job's own violations are recorded by the job
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._busy -= 1

    def close(self, *, hurry: bool = True) -> None:
        """Run what is still queued (at once when `hurry`), then stop the threads."""
        with self._cond:
            if hurry:
                self._heap = [(0.0, seq, job) for _, seq, job in self._heap]
                heapq.heapify(self._heap)
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
