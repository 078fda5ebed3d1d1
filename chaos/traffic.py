"""The money traffic of a chaos run, and the book of what its definitive answers promised.

Every operation is one Idempotency-Key: a top-up (add-money, then the harness plays the
gateway and sends its signed webhooks), a transfer, a merchant payment, a refund (by the
merchant) or a withdrawal (settled later by chaos.bank). Each request is retried with the same
key and body until it has a definitive answer (chaos.net); some keys are raced from 2-3
connections at once, some are sent again seconds after their answer, and some are sent again
with a different body (which must be refused with 422 idempotency_key_reused). Every answer for
one key must be the same.

The gateway's webhooks come 1-3 times (copies at once from several connections), sometimes
after a failure for the same payment (a success after a failure is still credited), sometimes
followed by another success under a new event id, by a contradicting failure, or by the same
event again seconds later; sometimes an event with the wrong amount comes first (422, nothing
credited). Some payments fail and some are never paid.

The Book adds up what the 2xx answers promise each wallet and system account; chaos.verify
holds the database to it.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

from chaos.net import Answer, Client, GaveUp, Stats, Timers, Violations
from wallets.gateway import signature_header

PIN = "4826"
PASSWORD = "chaos password 1"
GATEWAY_PATH = "/api/v1/webhooks/gateway"
# The mix of operations, by weight.
KINDS = ("topup", "transfer", "pay", "refund", "withdraw")
WEIGHTS = (15, 35, 22, 14, 14)
# Shares of keys raced from several connections, sent again late, and reused with another body.
RACE_SHARE = 0.2
LATE_SHARE = 0.08
MISUSE_SHARE = 0.02
# The refusals each kind of operation may legitimately get (they must move nothing).
REFUSALS = {
    "topup": set(),
    "transfer": {"insufficient_funds", "limit_exceeded"},
    "pay": {"insufficient_funds", "limit_exceeded"},
    "refund": {"refund_exceeds_payment", "insufficient_funds", "limit_exceeded"},
    "withdraw": {"insufficient_funds", "limit_exceeded"},
}


@dataclass
class Party:
    name: str
    email: str
    merchant: bool
    token: str = ""
    wallet_id: str = ""
    handle: str = ""
    bank_account: str = ""
    user_id: str = ""


@dataclass
class PaymentRecord:
    transaction_id: str
    payment_id: str
    customer: Party
    merchant: Party
    amount: int
    fee: int
    refundable: int
    refunded: int = 0


@dataclass
class AttemptRecord:
    party: Party
    amount: int
    # What the gateway did: succeeded (its success was acknowledged), failed, or pending
    # (never paid).
    outcome: str
    credited_answers: int = 0


@dataclass
class KeyRecord:
    party: Party
    key: str
    kind: str
    answer: Answer


@dataclass
class Book:
    lock: threading.Lock = field(default_factory=threading.Lock)
    # What the 2xx answers moved, by wallet id and by system account code.
    wallets: Counter = field(default_factory=Counter)
    system: Counter = field(default_factory=Counter)
    keys: list[KeyRecord] = field(default_factory=list)
    transfers: dict[str, int] = field(default_factory=dict)
    payments: dict[str, PaymentRecord] = field(default_factory=dict)
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)
    refund_transactions: set[str] = field(default_factory=set)
    attempts: dict[str, AttemptRecord] = field(default_factory=dict)
    withdrawals: dict[str, tuple[Party, int]] = field(default_factory=dict)
    unanswered: int = 0

    def move(self, legs: list[tuple[Party | str, int]]) -> None:
        """Record legs (a party's wallet or a system account code, amount); the caller holds
        the lock."""
        for where, amount in legs:
            if isinstance(where, Party):
                self.wallets[where.wallet_id] += amount
            else:
                self.system[where] += amount


class Traffic:
    def __init__(
        self,
        *,
        port: int,
        seed: int,
        stats: Stats,
        violations: Violations,
        timers: Timers,
        gateway_secret: str,
        limit_seconds: float,
    ) -> None:
        self.port = port
        self.seed = seed
        self.stats = stats
        self.violations = violations
        self.timers = timers
        self.gateway_secret = gateway_secret
        self.limit_seconds = limit_seconds
        self.book = Book()
        self.customers: list[Party] = []
        self.merchants: list[Party] = []

    def client(self, rng: random.Random | None = None) -> Client:
        return Client(
            host="127.0.0.1",
            port=self.port,
            stats=self.stats,
            limit_seconds=self.limit_seconds,
            rng=rng or random.Random(),
        )

    # -- setting up the parties -------------------------------------------------------------

    def enrol(self, party: Party, *, webhook_url: str | None) -> str | None:
        """Register, log in, and add a bank account (customers) or a webhook endpoint
        (merchants); the endpoint's secret is returned."""
        client = self.client()
        try:
            body = {"email": party.email, "password": PASSWORD, "pin": PIN, "name": f"Chaos {party.name}"}
            if party.merchant:
                body.update(role="merchant", business_name=f"Chaos Shop {party.name}")
            registered = client.send("POST", "/api/v1/auth/register", body)
            # 409 email_taken: an earlier attempt registered it and its answer was lost.
            if registered.status != 201 and registered.code != "email_taken":
                raise RuntimeError(f"register {party.email}: {registered.brief()}")
            login = client.send("POST", "/api/v1/auth/login", {"email": party.email, "password": PASSWORD})
            if login.status != 200:
                raise RuntimeError(f"login {party.email}: {login.brief()}")
            party.token = login.body["access_token"]
            auth = {"Authorization": f"Bearer {party.token}"}
            me = client.send("GET", "/api/v1/me", headers=auth)
            party.wallet_id, party.handle = me.body["wallet"]["id"], me.body["wallet"]["handle"]
            party.user_id = str(me.body["user"]["id"])
            if not party.merchant:
                number = random.Random(party.email).randrange(10**11, 10**12)
                account = {"account_number": f"5{number}", "ifsc": "HDFC0001234"}
                added = client.send(
                    "POST", "/api/v1/wallet/bank-accounts", {**account, "holder_name": party.name}, auth
                )
                if added.status != 201:
                    raise RuntimeError(f"bank account for {party.email}: {added.brief()}")
                party.bank_account = added.body["id"]
                return None
            endpoint = client.send("POST", "/api/v1/merchant/webhook-endpoints", {"url": webhook_url}, auth)
            if endpoint.status != 201:
                raise RuntimeError(f"webhook endpoint for {party.email}: {endpoint.brief()}")
            return endpoint.body["secret"]
        finally:
            client.close()

    # -- one operation ----------------------------------------------------------------------

    def run(self, client: Client, index: int) -> str:
        rng = random.Random(f"{self.seed}:op:{index}")
        kind = rng.choices(KINDS, weights=WEIGHTS)[0]
        if kind == "refund" and not self.book.payments:
            kind = "pay"
        self.stats.add(f"op_{kind}")
        try:
            getattr(self, kind)(client, rng, index)
        except GaveUp as exc:
            with self.book.lock:
                self.book.unanswered += 1
            self.violations.add(f"operation {index} ({kind}): {exc}")
        return kind

    def _money(self, client: Client, rng: random.Random, kind: str, party: Party, path: str, body: dict, index: int):
        """One money request under a new key, until a definitive answer; sometimes raced,
        retried late, or reused with another body."""
        key = f"chaos-{self.seed}-{index}"
        headers = {"Authorization": f"Bearer {party.token}", "Idempotency-Key": key}
        copies = rng.choices([2, 3], weights=[70, 30])[0] if rng.random() < RACE_SHARE else 1
        if copies > 1:
            self.stats.add("raced_keys")
            answers = self._race(path, body, headers, copies)
        else:
            answers = [client.send("POST", path, body, headers)]
        first = answers[0]
        for other in answers[1:]:
            if not other.same_as(first):
                self.violations.add(f"key {key} on {path} answered {first.brief()} and also {other.brief()}")
        self.stats.add(f"answered_{first.status // 100}xx")
        self.stats.add(f"answer_{kind}_{first.status}{'_' + first.code if first.code else ''}")
        with self.book.lock:
            self.book.keys.append(KeyRecord(party, key, kind, first))
        if rng.random() < LATE_SHARE:
            self.timers.after(rng.uniform(2, 12), lambda: self._again(path, body, headers, first))
        if rng.random() < MISUSE_SHARE:
            self._misuse(client, path, body, headers)
        ok = 200 <= first.status < 300 or first.code in REFUSALS[kind]
        if not ok:
            self.violations.add(f"{kind} {path} {json.dumps(body)[:200]} answered {first.brief()}")
        return first

    def _race(self, path: str, body: dict, headers: dict, copies: int) -> list[Answer]:
        answers: list[Answer | None] = [None] * copies
        failures: list[GaveUp] = []
        start = threading.Barrier(copies)

        def one(i: int) -> None:
            client = self.client()
            try:
                start.wait()
                answers[i] = client.send("POST", path, body, headers)
            except GaveUp as exc:
                failures.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return answers

    def _again(self, path: str, body: dict, headers: dict, first: Answer) -> None:
        self.stats.add("late_retries")
        client = self.client()
        try:
            again = client.send("POST", path, body, headers)
        except GaveUp as exc:
            self.violations.add(f"late retry of {headers['Idempotency-Key']}: {exc}")
            return
        finally:
            client.close()
        if not again.same_as(first):
            self.violations.add(
                f"late retry of {headers['Idempotency-Key']} on {path} answered {again.brief()}, first {first.brief()}"
            )

    def _misuse(self, client: Client, path: str, body: dict, headers: dict) -> None:
        self.stats.add("keys_reused_with_another_body")
        other = {**body, "amount": int(body.get("amount", 0)) + 1}
        answer = client.send("POST", path, other, headers)
        if answer.status != 422 or answer.code != "idempotency_key_reused":
            self.violations.add(
                f"key {headers['Idempotency-Key']} reused with another body answered {answer.brief()}, "
                "not 422 idempotency_key_reused"
            )

    # -- the operations ---------------------------------------------------------------------

    def topup(self, client: Client, rng: random.Random, index: int) -> None:
        party = rng.choice(self.customers)
        amount = rng.randint(2_000, 20_000)
        answer = self._money(client, rng, "topup", party, "/api/v1/wallet/add-money", {"amount": amount}, index)
        if answer.status != 201:
            return
        payment_id, currency = answer.body["payment_id"], answer.body["currency"]
        if answer.body["amount"] != amount or answer.body["status"] != "pending":
            self.violations.add(f"add-money {amount} answered {answer.brief()}")
        roll = rng.random()
        outcome = "pending" if roll < 0.04 else "failed" if roll < 0.12 else "succeeded"
        record = AttemptRecord(party, amount, outcome)
        with self.book.lock:
            self.book.attempts[payment_id] = record
        reference = f"gw_chaos_{uuid.uuid4().hex[:16]}"

        def event(kind: str, paid: int = amount) -> dict:
            data = {"payment_id": payment_id, "amount": paid, "currency": currency, "gateway_reference": reference}
            return {"id": f"evt_chaos_{uuid.uuid4().hex}", "type": f"payment.{kind}", "data": data}

        if outcome == "pending":
            self.stats.add("payments_never_paid")
            return
        if outcome == "failed":
            self._gateway(client, event("failed"), record, results={"failed", "duplicate"}, copies=rng.randint(1, 2))
            return
        if rng.random() < 0.05:
            self.stats.add("gateway_wrong_amount")
            self._gateway(
                client, event("succeeded", amount + 1), record, results={"duplicate"}, codes={"amount_mismatch"}
            )
        if rng.random() < 0.12:
            # Out of order: a failure first, then the success (the customer paid on a retry).
            self.stats.add("gateway_failure_before_success")
            self._gateway(client, event("failed"), record, results={"failed", "duplicate"})
        success = event("succeeded")
        settled = {"credited", "already_credited", "duplicate"}
        copies = rng.choices([1, 2, 3], weights=[60, 25, 15])[0]
        self._gateway(client, success, record, results=settled, copies=copies)
        with self.book.lock:
            self.book.move([(party, amount), ("gateway_clearing", -amount)])
        if rng.random() < 0.10:
            self.stats.add("gateway_success_again_new_id")
            self._gateway(client, event("succeeded"), record, results={"already_credited", "duplicate"})
        if rng.random() < 0.10:
            self.stats.add("gateway_failure_after_success")
            self._gateway(client, event("failed"), record, results={"flagged", "duplicate"})
        if rng.random() < 0.10:
            self.stats.add("gateway_stale_redelivery")
            self.timers.after(
                rng.uniform(2, 12),
                lambda: self._gateway(self.client(), success, record, results={"duplicate"}, close=True),
            )

    def _gateway(
        self,
        client: Client,
        event: dict,
        record: AttemptRecord,
        *,
        results: set[str],
        codes: frozenset | set = frozenset(),
        copies: int = 1,
        close: bool = False,
    ) -> None:
        """Deliver a signed gateway webhook (`copies` at once from separate connections)
        until each copy has a definitive answer, and check the answers."""
        raw = json.dumps(event, separators=(",", ":")).encode()

        def headers(data: bytes) -> dict:
            return {"Gateway-Signature": signature_header(secrets=self.gateway_secret, body=data)}

        def one(sender: Client) -> None:
            self.stats.add("gateway_webhooks")
            try:
                answer = sender.send("POST", GATEWAY_PATH, raw=raw, headers=headers)
            except GaveUp as exc:
                self.violations.add(f"gateway webhook {event['type']} for {event['data']['payment_id']}: {exc}")
                return
            result = answer.body.get("result") if isinstance(answer.body, dict) and answer.status == 200 else None
            if result == "credited":
                with self.book.lock:
                    record.credited_answers += 1
            if result not in results and answer.code not in codes:
                self.violations.add(
                    f"gateway webhook {event['type']} ({event['data']['amount']}) for {event['data']['payment_id']} "
                    f"answered {answer.brief()}; expected a result in {sorted(results)} or a code in {sorted(codes)}"
                )

        if copies == 1:
            try:
                one(client)
            finally:
                if close:
                    client.close()
            return
        self.stats.add("gateway_webhook_duplicates", copies - 1)
        senders = [self.client() for _ in range(copies)]
        threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for sender in senders:
            sender.close()

    def transfer(self, client: Client, rng: random.Random, index: int) -> None:
        sender = rng.choice(self.customers)
        recipient = rng.choice([c for c in self.customers if c is not sender])
        amount = rng.randint(1, 5_000) if rng.random() > 0.03 else rng.randint(200_000, 2_000_000)
        to = recipient.handle if rng.random() < 0.7 else recipient.wallet_id
        body = {"to": to, "amount": amount, "pin": PIN, "note": f"chaos {index}"}
        answer = self._money(client, rng, "transfer", sender, "/api/v1/wallet/transfer", body, index)
        if answer.status == 201:
            with self.book.lock:
                self.book.transfers[answer.body["transaction"]["id"]] = amount
                self.book.move([(sender, -amount), (recipient, amount)])

    def pay(self, client: Client, rng: random.Random, index: int) -> None:
        customer = rng.choice(self.customers)
        merchant = rng.choice(self.merchants)
        amount = rng.randint(1, 4_000) if rng.random() > 0.03 else rng.randint(200_000, 2_000_000)
        body = {"merchant": merchant.handle, "amount": amount, "pin": PIN, "order_id": f"chaos-{index}"}
        answer = self._money(client, rng, "pay", customer, "/api/v1/wallet/pay", body, index)
        if answer.status != 201:
            return
        fee = answer.body["fee"]
        record = PaymentRecord(
            transaction_id=answer.body["transaction"]["id"],
            payment_id=answer.body["payment_id"],
            customer=customer,
            merchant=merchant,
            amount=amount,
            fee=fee,
            refundable=amount,
        )
        with self.book.lock:
            self.book.payments[record.transaction_id] = record
            self.book.move([(customer, -amount), (merchant, amount - fee), ("fees", fee)])

    def refund(self, client: Client, rng: random.Random, index: int) -> None:
        with self.book.lock:
            payments = list(self.book.payments.values())
            open_ones = [p for p in payments if p.refundable > 0]
            payment = rng.choice(open_ones or payments)
            left = payment.refundable
        roll = rng.random()
        if roll < 0.25:
            body = {}
        elif roll < 0.8 and left > 0:
            body = {"amount": rng.randint(1, left)}
        else:
            # More than is left (the book's view is never below the truth): refused.
            body = {"amount": left + rng.randint(1, 500)}
        if rng.random() < 0.3:
            body["reason"] = f"chaos refund {index}"
        path = f"/api/v1/merchant/payments/{payment.transaction_id}/refund"
        answer = self._money(client, rng, "refund", payment.merchant, path, body, index)
        if answer.status == 201:
            refunded, fee_back = answer.body["amount"], answer.body["fee_refunded"]
            with self.book.lock:
                self.book.refunds[answer.body["refund_id"]] = (payment.transaction_id, refunded)
                if answer.body.get("transaction"):
                    self.book.refund_transactions.add(answer.body["transaction"]["id"])
                payment.refunded += refunded
                payment.refundable = min(payment.refundable - refunded, answer.body["payment"]["refundable"])
                self.book.move(
                    [(payment.merchant, -(refunded - fee_back)), ("fees", -fee_back), (payment.customer, refunded)]
                )
        elif answer.code == "refund_exceeds_payment" and isinstance(answer.body.get("refundable"), int):
            with self.book.lock:
                payment.refundable = min(payment.refundable, answer.body["refundable"])

    def withdraw(self, client: Client, rng: random.Random, index: int) -> None:
        party = rng.choice(self.customers)
        amount = rng.randint(100, 5_000)
        body = {"amount": amount, "pin": PIN, "bank_account": party.bank_account}
        answer = self._money(client, rng, "withdraw", party, "/api/v1/wallet/withdraw", body, index)
        if answer.status == 202:
            if answer.body.get("amount") != amount or answer.body.get("status") != "pending":
                self.violations.add(f"withdraw {amount} answered {answer.brief()}")
            with self.book.lock:
                self.book.withdrawals[answer.body["withdrawal_id"]] = (party, amount)
