"""A merchant's webhook receiver for tests: a real HTTP server on 127.0.0.1 (random port) in
a thread, that can be switched between answering 200, answering 500, taking the request and
answering only after the sender has timed out, hanging until released, and redirecting. It records every
request and which ones it accepted, and verifies signatures as a merchant would."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wallets.gateway import signature_verify

OK = "ok"
FAIL = "fail"
# Accept (record) the event, then answer too late: the sender sees a timeout and retries,
# so the receiver gets the same event id twice: what at-least-once means.
SLOW = "slow"
# Hold the request until `release` is set (a worker killed mid-delivery).
HANG = "hang"
# Answer 302 to `redirect_to` (a receiver trying to bounce the request elsewhere).
REDIRECT = "redirect"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    accepted: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    mode: str = OK
    slow_seconds: float = 2.0
    redirect_to: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return [r.event["id"] for r in self.received if r.accepted]

    def deduplicated(self) -> dict[str, dict]:
        """What the merchant's system keeps: each accepted event once, by id."""
        with self.lock:
            return {r.event["id"]: r.event for r in self.received if r.accepted}

    def verify(self, received: Received, *, secret: str) -> int:
        return signature_verify(
            header=received.headers.get("Wallet-Signature"), body=received.body, secret=secret, tolerance_seconds=300
        )


def receiver_start() -> Receiver:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            mode = receiver.mode
            record = Received(headers=dict(self.headers), body=body, accepted=mode in (OK, SLOW))
            with receiver.lock:
                receiver.received.append(record)
            receiver.arrived.set()
            if mode == HANG:
                receiver.release.wait(30)
                return
            if mode == SLOW:
                receiver.release.wait(receiver.slow_seconds)
            status = {FAIL: 500, REDIRECT: 302}.get(mode, 200)
            payload = b'{"ok": true}' if status == 200 else b'{"error": "down"}'
            try:
                self.send_response(status)
                if mode == REDIRECT:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                # The sender gave up (timed out) before the answer: it will retry.
                pass

        def do_GET(self):
            # Webhooks are POSTed; a GET here is a followed redirect, recorded so a test sees it.
            with receiver.lock:
                receiver.received.append(Received(headers=dict(self.headers), body=b"", accepted=False))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.server.daemon_threads = True
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


def receiver_stop(receiver: Receiver) -> None:
    receiver.release.set()
    receiver.server.shutdown()
    receiver.server.server_close()
