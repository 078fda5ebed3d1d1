"""The chaos harness's own parts, over real HTTP on loopback: the client's retries until a
definitive answer, the bank's payout API (a reference is paid once), the merchants' receiver
(signatures checked, ids counted), the crash schedule and the knobs. The CI step (`make chaos`
at a bounded size) runs the whole of it against the real service."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaos.bank import Bank, Plan
from chaos.net import Client, Connection, GaveUp, Stats, Violations
from chaos.receiver import Receiver
from chaos.run import CRASH_KINDS, Knobs, chaos_schedule
from wallets.gateway import signature_header


class Scripted:
    """A server that answers each request with the next (status, body) of a script."""

    def __init__(self, script: list[tuple[int, dict]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append((self.headers.get("Idempotency-Key"), json.loads(self.rfile.read(length))))
                status, body = owner.script.pop(0) if owner.script else (200, {})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    made = []

    def make(script) -> Scripted:
        made.append(Scripted(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


def client(port: int, stats: Stats, limit: float = 30) -> Client:
    return Client(host="127.0.0.1", port=port, stats=stats, limit_seconds=limit, rng=random.Random(1))


def test_a_request_is_sent_again_with_its_key_until_a_definitive_answer(scripted):
    # given: a server that is busy with the key, then failing, then rate limiting, then answers
    server = scripted(
        [
            (409, {"code": "idempotency_key_in_use"}),
            (503, {"code": "service_unavailable"}),
            (429, {"code": "rate_limited"}),
            (422, {"code": "insufficient_funds"}),
        ]
    )
    stats = Stats()
    # when
    answer = client(server.port, stats).send("POST", "/x", {"amount": 5}, {"Idempotency-Key": "k1"})
    # then: the refusal is definitive; every attempt carried the same key and body
    assert (answer.status, answer.code) == (422, "insufficient_funds")
    assert server.requests == [("k1", {"amount": 5})] * 4
    assert stats.get("retries") == 3


def test_a_409_other_than_key_in_use_is_an_answer(scripted):
    server = scripted([(409, {"code": "email_taken"})])
    answer = client(server.port, Stats()).send("POST", "/x", {})
    assert (answer.status, answer.code) == (409, "email_taken")


def test_a_request_without_a_definitive_answer_gives_up_at_its_limit(scripted):
    server = scripted([(503, {})] * 1000)
    with pytest.raises(GaveUp):
        client(server.port, Stats(), limit=0.5).send("POST", "/x", {})


@pytest.fixture
def bank():
    made = Bank(
        port=0,
        service_port=1,
        secret="s" * 32,
        seed=7,
        late_seconds=0.1,
        stats=Stats(),
        violations=Violations(),
        answer_limit_seconds=1,
    )
    made.start()
    yield made
    made.stop()


def payout(reference: str, amount: int = 500) -> bytes:
    body = {
        "reference": reference,
        "amount": amount,
        "currency": "INR",
        "account_number": "123456789012",
        "ifsc": "HDFC0001234",
        "holder_name": "A",
    }
    return json.dumps(body).encode()


def quiet(answer: str = "normal") -> Plan:
    """A payout the bank answers as told and never settles by itself (no callbacks)."""
    return Plan(answer, "never", "succeeded", 1, 0.0, False, False, False, False)


def test_the_bank_pays_a_reference_once_and_answers_a_repeat_with_the_first(bank):
    # given
    bank.plans["w1"] = quiet()
    conn = Connection("127.0.0.1", bank.server.server_address[1])
    # when: the same payout twice, then once with another amount
    first = conn.request("POST", "/payouts", payout("w1"))
    again = conn.request("POST", "/payouts", payout("w1"))
    conn.request("POST", "/payouts", payout("w1", amount=501))
    # then
    assert (first.status, first.body["status"], first.body["submissions"]) == (201, "processing", 1)
    assert (again.status, again.body["submissions"]) == (200, 2)
    assert bank.stats.get("bank_payouts") == 1 and bank.stats.get("bank_resubmissions") == 2
    assert bank.violations.count == 1 and "sent again as 501" in bank.violations.messages[0]
    assert conn.request("GET", "/payouts/nobody").status == 404


def test_a_payout_refused_before_it_was_taken_is_taken_the_next_time(bank):
    bank.plans["w2"] = quiet("refuse")
    conn = Connection("127.0.0.1", bank.server.server_address[1])
    assert conn.request("POST", "/payouts", payout("w2")).status == 503
    assert conn.request("GET", "/payouts/w2").status == 404
    assert conn.request("POST", "/payouts", payout("w2")).status == 201
    assert bank.truth()["w2"].submissions == 1


def test_the_bank_cancels_only_what_is_still_processing(bank):
    # given: one payout processing, one settled
    bank.plans["w3"] = quiet()
    bank.plans["w4"] = quiet()
    conn = Connection("127.0.0.1", bank.server.server_address[1])
    conn.request("POST", "/payouts", payout("w3"))
    conn.request("POST", "/payouts", payout("w4"))
    bank.payouts["w4"].status = "failed"
    # when
    cancelled = conn.request("POST", "/payouts/w3/cancel")
    kept = conn.request("POST", "/payouts/w4/cancel")
    # then
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert (kept.status, kept.body["status"]) == (200, "failed")
    assert bank.unsettled() == 0
    assert conn.request("POST", "/payouts/none/cancel").status == 404


@pytest.fixture
def receiver():
    made = Receiver(port=0, seed=1, stats=Stats(), violations=Violations())
    made.refusing = False
    made.start()
    yield made
    made.stop()


def webhook(receiver: Receiver, name: str, event: dict, secret: str):
    raw = json.dumps(event).encode()
    conn = Connection("127.0.0.1", receiver.server.server_address[1])
    return conn.request("POST", f"/hooks/{name}", raw, {"Wallet-Signature": signature_header(secrets=secret, body=raw)})


def test_the_receiver_counts_signed_events_and_refuses_forged_ones(receiver):
    # given
    receiver.register("m0", "w" * 32)
    event = {"id": "evt_1", "type": "payment.received", "created_at": "2026-01-01T00:00:00Z", "data": {}}
    # when: the event twice with the endpoint's secret, once with another
    answers = [webhook(receiver, "m0", event, "w" * 32).status for _ in range(2)]
    forged = webhook(receiver, "m0", {**event, "id": "evt_2"}, "x" * 32).status
    # then
    assert answers == [200, 200] and forged == 400
    accepted, _ = receiver.received()
    assert accepted == {"evt_1": 2}
    assert receiver.violations.count == 1


def test_the_schedule_has_every_crash_and_both_shutdowns_within_the_run():
    knobs = Knobs.from_env({"CHAOS_OPS": "1000", "CHAOS_CRASHES": "8", "CHAOS_PG_RESTARTS": "2", "CHAOS_SEED": "3"})
    schedule = chaos_schedule(random.Random(3), knobs)
    kinds = [kind for _, kind in schedule]
    assert len(kinds) == 10
    assert set(CRASH_KINDS) <= set(kinds)
    assert sorted(k for k in kinds if k.startswith("postgres_")) == ["postgres_fast", "postgres_immediate"]
    positions = [at for at, _ in schedule]
    assert positions == sorted(positions) and 0 < positions[0] <= positions[-1] < 1000
    assert schedule == chaos_schedule(random.Random(3), knobs)


def test_knobs_are_whole_numbers():
    assert Knobs.from_env({}).ops == 20_000
    with pytest.raises(SystemExit, match="CHAOS_OPS must be a whole number"):
        Knobs.from_env({"CHAOS_OPS": "many"})
