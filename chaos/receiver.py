"""The merchants' webhook receiver, played by the harness: one HTTP server, one path per
merchant endpoint (/hooks/<n>), each checking `Wallet-Signature` with that endpoint's secret as
a merchant would. It keeps every event id it accepted (deliveries are at least once, so an id
may come more than once) and, the first time it sees some ids while the traffic runs, answers
503 so that the service has to deliver them again later."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chaos.net import Stats, Violations
from wallets.gateway import signature_verify

SIGNATURE_HEADER = "Wallet-Signature"
# Of the event ids seen for the first time, this share is refused once (503).
REFUSE_FIRST_SHARE = 0.03


class Receiver:
    def __init__(self, *, port: int, seed: int, stats: Stats, violations: Violations) -> None:
        self.seed = seed
        self.stats = stats
        self.violations = violations
        self.lock = threading.Lock()
        self.secrets: dict[str, str] = {}
        self.accepted: Counter[str] = Counter()
        self.types: dict[str, str] = {}
        self.refused: set[str] = set()
        # The run stops refusing when its traffic ends, so that the end of the run waits at
        # most one retry interval (a minute) for the last refused deliveries.
        self.refusing = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.receiver = self
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver-http", daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{name}"

    def register(self, name: str, secret: str) -> None:
        with self.lock:
            self.secrets[name] = secret

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> tuple[Counter[str], dict[str, str]]:
        with self.lock:
            return Counter(self.accepted), dict(self.types)

    def handle(self, name: str, headers, raw: bytes) -> int:
        with self.lock:
            secret = self.secrets.get(name)
        if secret is None:
            self.violations.add(f"merchant webhook to an endpoint nobody registered: /hooks/{name}")
            return 404
        try:
            signature_verify(header=headers.get(SIGNATURE_HEADER), body=raw, secret=secret, tolerance_seconds=300)
            event = json.loads(raw)
            event_id, event_type = event["id"], event["type"]
            assert {"id", "type", "created_at", "data"} <= set(event)
        except Exception as exc:
            self.violations.add(f"merchant webhook to /hooks/{name} is not a signed event: {type(exc).__name__}: {exc}")
            return 400
        with self.lock:
            first = event_id not in self.accepted and event_id not in self.refused
            chance = random.Random(f"{self.seed}:receiver:{event_id}").random()
            if self.refusing and first and chance < REFUSE_FIRST_SHARE:
                self.refused.add(event_id)
                self.stats.add("webhooks_refused_once")
                return 503
            if event_id in self.accepted:
                self.stats.add("webhooks_received_again")
            self.accepted[event_id] += 1
            self.types[event_id] = event_type
        self.stats.add("webhooks_received")
        return 200


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/hooks/"):
            status = self.server.receiver.handle(path[len("/hooks/") :], self.headers, raw)
        else:
            status = 404
        body = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
