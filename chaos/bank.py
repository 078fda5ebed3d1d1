"""The bank, played by the harness over real HTTP: the payout API the service calls
(wallets.bank's contract, the one wallets.sandbox_bank implements too) on a port of its own,
and signed callbacks (`Bank-Signature`, BANK_WEBHOOK_SECRET) to /api/v1/webhooks/bank.

- POST /payouts {reference, amount, currency, account_number, ifsc, holder_name}: 201 for a new
  reference, 200 with the payout for a known one (the reference is the bank's idempotency key:
  a payout is never paid twice).
- GET /payouts/{reference}: the payout, or 404 when the bank never took it.
- POST /payouts/{reference}/cancel: a processing payout becomes cancelled; a settled one keeps
  its status; either way the answer is the payout.

How it misbehaves is decided per payout from the run's seed and the reference. The
submission is answered at once, or taken and answered only after the service's
BANK_TIMEOUT_SECONDS (the service must find out by asking), or taken and answered 500, or taken
and the connection closed without an answer, or refused with 503 without being taken (the
service must send it again once the bank says it has none). The payout is settled (succeeded or
failed) with a callback that overtakes the answer to the submission, or seconds later, or
without any callback (only a status check tells), or never (the service cancels it after
WITHDRAWAL_TIMEOUT_SECONDS). Each callback is delivered 1-3 times, some copies at once from
several connections; sometimes a callback with the wrong amount comes first (422, nothing
moves), the outcome comes again under a new event id, an old callback is delivered again
seconds later, or a callback contradicts the settled outcome (the service flags it and moves
nothing). Status checks are sometimes answered too late as well.

The bank's record is the truth the run holds the service to: a payout the bank settled as
succeeded must be a posted withdrawal; failed, cancelled or never taken, a released one.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from chaos.net import Client, GaveUp, Stats, Timers, Violations
from wallets.gateway import signature_header

CALLBACK_PATH = "/api/v1/webhooks/bank"
SIGNATURE_HEADER = "Bank-Signature"
FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Plan:
    answer: str  # normal, late, error, drop, refuse
    settle: str  # overtake, later, silent, never
    outcome: str  # succeeded, failed
    copies: int
    delay: float
    mismatch_first: bool
    again_new_id: bool
    contradict: bool
    stale_again: bool


@dataclass
class Payout:
    reference: str
    amount: int
    currency: str
    account_last4: str
    status: str = "processing"
    submissions: int = 1
    callbacks: list[str] = field(default_factory=list)

    def out(self) -> dict:
        return {
            "reference": self.reference,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "submissions": self.submissions,
        }


def plan_for(rng: random.Random) -> Plan:
    roll = rng.random()
    answer = "normal" if roll < 0.88 else "late" if roll < 0.94 else "error" if roll < 0.97 else "drop"
    if rng.random() < 0.03:
        answer = "refuse"
    roll = rng.random()
    settle = "overtake" if roll < 0.15 else "later" if roll < 0.75 else "silent" if roll < 0.87 else "never"
    return Plan(
        answer=answer,
        settle=settle,
        outcome="succeeded" if rng.random() < 0.75 else "failed",
        copies=rng.choices([1, 2, 3], weights=[60, 25, 15])[0],
        delay=rng.uniform(0.2, 5.0),
        mismatch_first=rng.random() < 0.05,
        again_new_id=rng.random() < 0.10,
        contradict=rng.random() < 0.15,
        stale_again=rng.random() < 0.10,
    )


class Bank:
    def __init__(
        self,
        *,
        port: int,
        service_port: int,
        secret: str,
        seed: int,
        late_seconds: float,
        stats: Stats,
        violations: Violations,
        answer_limit_seconds: float,
    ) -> None:
        self.service_port = service_port
        self.secret = secret
        self.seed = seed
        self.late_seconds = late_seconds
        self.stats = stats
        self.violations = violations
        self.answer_limit_seconds = answer_limit_seconds
        self.lock = threading.Lock()
        self.payouts: dict[str, Payout] = {}
        self.plans: dict[str, Plan] = {}
        # Callbacks the service answered by settling the withdrawal (posted or released): one
        # payout can be settled by at most one of them.
        self.settling_answers: Counter[str] = Counter()
        self.timers = Timers(threads=4, name="bank")
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.bank = self
        self._thread = threading.Thread(target=self.server.serve_forever, name="bank-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.timers.close(hurry=True)
        self.server.shutdown()
        self.server.server_close()

    # -- what the run asks at the end -------------------------------------------------------

    def truth(self) -> dict[str, Payout]:
        with self.lock:
            return dict(self.payouts)

    def unsettled(self) -> int:
        with self.lock:
            return sum(1 for p in self.payouts.values() if p.status == "processing")

    def settled_more_than_once(self) -> list[str]:
        with self.lock:
            return [reference for reference, n in self.settling_answers.items() if n > 1]

    def busy(self) -> bool:
        return self.timers.pending() > 0

    # -- the payout API ---------------------------------------------------------------------

    def _plan(self, reference: str) -> Plan:
        with self.lock:
            plan = self.plans.get(reference)
            if plan is None:
                plan = plan_for(random.Random(f"{self.seed}:bank:{reference}"))
                self.plans[reference] = plan
            return plan

    def submit(self, request: _Handler, body: dict) -> None:
        self.stats.add("bank_submissions")
        required = ("reference", "amount", "currency", "account_number", "ifsc", "holder_name")
        if not all(name in body for name in required) or not isinstance(body["amount"], int):
            self.violations.add(f"bank: a payout request without the fields of the payout API: {sorted(body)}")
            request.reply(400, {"error": "bad payout request"})
            return
        reference = str(body["reference"])
        plan = self._plan(reference)
        with self.lock:
            payout = self.payouts.get(reference)
            first = payout is None
            if first and plan.answer == "refuse":
                # Refused once, before taking it; the service's next attempt is answered.
                plan.answer = "normal"
                refused = True
            else:
                refused = False
                if first:
                    payout = Payout(reference, body["amount"], body["currency"], str(body["account_number"])[-4:])
                    self.payouts[reference] = payout
                else:
                    payout.submissions += 1
                    if (payout.amount, payout.currency) != (body["amount"], body["currency"]):
                        self.violations.add(
                            f"bank: payout {reference} sent again as {body['amount']} {body['currency']}, "
                            f"first as {payout.amount} {payout.currency}"
                        )
        if refused:
            self.stats.add("bank_refused_before_taking")
            request.reply(503, {"error": "try again later"})
            return
        if not first:
            self.stats.add("bank_resubmissions")
            request.reply(200, self._out(reference))
            return
        self.stats.add("bank_payouts")
        if plan.settle == "overtake":
            # The callback reaches the service before this answer does.
            self._settle(reference, plan)
        elif plan.settle in ("later", "silent"):
            self.timers.after(plan.delay, lambda: self._settle(reference, plan))
        if plan.answer == "late":
            self.stats.add("bank_timeouts_after_taking")
            time.sleep(self.late_seconds)
            request.reply(201, self._out(reference))
        elif plan.answer == "error":
            self.stats.add("bank_5xx_after_taking")
            request.reply(500, {"error": "internal error"})
        elif plan.answer == "drop":
            self.stats.add("bank_dropped_after_taking")
            request.close_connection = True
        else:
            request.reply(201, self._out(reference))

    def status(self, request: _Handler, reference: str) -> None:
        self.stats.add("bank_status_checks")
        rng = random.Random()
        if rng.random() < 0.02:
            self.stats.add("bank_status_timeouts")
            time.sleep(self.late_seconds)
        out = self._out(reference)
        request.reply(200, out) if out else request.reply(404, {"error": "no such payout"})

    def cancel(self, request: _Handler, reference: str) -> None:
        self.stats.add("bank_cancel_requests")
        with self.lock:
            payout = self.payouts.get(reference)
            if payout is not None and payout.status == "processing":
                payout.status = "cancelled"
                self.stats.add("bank_cancelled")
        out = self._out(reference)
        request.reply(200, out) if out else request.reply(404, {"error": "no such payout"})

    def _out(self, reference: str) -> dict | None:
        with self.lock:
            payout = self.payouts.get(reference)
            return None if payout is None else payout.out()

    # -- settling and calling back ----------------------------------------------------------

    def _settle(self, reference: str, plan: Plan) -> None:
        with self.lock:
            payout = self.payouts[reference]
            if payout.status != "processing":
                return  # cancelled by the service first
            payout.status = plan.outcome
            amount, currency = payout.amount, payout.currency
        self.stats.add(f"bank_settled_{plan.outcome}")
        if plan.settle == "silent":
            self.stats.add("bank_settled_silently")
            return
        self._callbacks(reference, plan, amount, currency)

    def _event(self, reference: str, kind: str, amount: int, currency: str) -> dict:
        data = {"reference": reference, "amount": amount, "currency": currency}
        if kind == "failed":
            data["reason"] = "the beneficiary bank rejected the credit (chaos bank)"
        return {"id": f"bevt_chaos_{uuid.uuid4().hex}", "type": f"payout.{kind}", "data": data}

    def _callbacks(self, reference: str, plan: Plan, amount: int, currency: str) -> None:
        settled = {"posted", "released", "already_settled", "duplicate"}
        if plan.mismatch_first:
            wrong = self._event(reference, plan.outcome, amount + 1, currency)
            self.stats.add("bank_callbacks_wrong_amount")
            self._deliver(wrong, results={"duplicate"}, codes={"amount_mismatch"})
        event = self._event(reference, plan.outcome, amount, currency)
        if plan.copies > 1:
            self.stats.add("bank_callbacks_duplicated", plan.copies - 1)
            threads = [
                threading.Thread(target=self._deliver, args=(event,), kwargs={"results": settled}, daemon=True)
                for _ in range(plan.copies)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            self._deliver(event, results=settled)
        if plan.again_new_id:
            self.stats.add("bank_callbacks_again_new_id")
            self._deliver(
                self._event(reference, plan.outcome, amount, currency), results=settled - {"posted", "released"}
            )
        if plan.contradict:
            other = "failed" if plan.outcome == "succeeded" else "succeeded"
            self.stats.add("bank_callbacks_contradicting")
            self._deliver(self._event(reference, other, amount, currency), results={"flagged", "duplicate"})
        if plan.stale_again:
            self.stats.add("bank_callbacks_stale")
            self.timers.after(
                random.uniform(2, 10), lambda: self._deliver(event, results={"duplicate", "already_settled"})
            )

    def _deliver(self, event: dict, *, results: set[str], codes: frozenset | set = frozenset()) -> None:
        """POST one callback until the service gives a definitive answer (as a bank retries
        its callbacks), and check that answer."""
        self.stats.add("bank_callbacks_sent")
        client = Client(
            host="127.0.0.1",
            port=self.service_port,
            stats=self.stats,
            limit_seconds=self.answer_limit_seconds,
            rng=random.Random(),
        )
        raw = json.dumps(event, separators=(",", ":")).encode()
        try:
            answer = client.send(
                "POST",
                CALLBACK_PATH,
                raw=raw,
                headers=lambda data: {SIGNATURE_HEADER: signature_header(secrets=self.secret, body=data)},
            )
        except GaveUp as exc:
            self.violations.add(f"bank callback {event['type']} for {event['data']['reference']}: {exc}")
            return
        finally:
            client.close()
        result = answer.body.get("result") if answer.status == 200 and isinstance(answer.body, dict) else None
        if result in ("posted", "released"):
            with self.lock:
                self.settling_answers[event["data"]["reference"]] += 1
        ok = result in results or answer.code in codes
        if not ok:
            self.violations.add(
                f"bank callback {event['type']} ({event['data']['amount']}) for {event['data']['reference']} "
                f"answered {answer.brief()}; expected a result in {sorted(results)} or a code in {sorted(codes)}"
            )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def reply(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:
            # The service stopped waiting (its timeout): what a late answer is for.
            self.close_connection = True

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def do_POST(self) -> None:
        bank: Bank = self.server.bank
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path == "/payouts" and body is not None:
            bank.submit(self, body)
        elif path.startswith("/payouts/") and path.endswith("/cancel"):
            bank.cancel(self, unquote(path[len("/payouts/") : -len("/cancel")]))
        else:
            self.reply(404, {"error": "no such route"})

    def do_GET(self) -> None:
        bank: Bank = self.server.bank
        path = self.path.split("?", 1)[0]
        if path.startswith("/payouts/") and path.count("/") == 2:
            bank.status(self, unquote(path[len("/payouts/") :]))
        else:
            self.reply(404, {"error": "no such route"})
