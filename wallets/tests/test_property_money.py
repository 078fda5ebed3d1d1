"""A hypothesis state machine over every money flow at once, against a model: top-ups with
duplicate webhooks, merchant payments with a fee and a cashback campaign funded from the
pool, full and partial refunds (fee and cashback given back in proportion), withdrawals that
the bank settles, rejects or leaves pending, with duplicate and contradicting callbacks.
Everything goes through the HTTP API on real PostgreSQL. After every step each wallet's
balance and held amount, the fees account and the cashback pool equal the model, and every
ledger invariant holds."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from rest_framework.test import APIClient

from ledger.models import Account
from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
from ledger.tests.invariants import assert_ledger_consistent
from wallets.cashback import campaign_create
from wallets.gateway import signature_header
from wallets.models import Wallet
from wallets.payments import merchant_fee_set
from wallets.tests.factories import auth_header, register_user
from wallets.tests.test_property import _webhook
from wallets.withdrawals import EVENT_FAILED, EVENT_SUCCEEDED

pytestmark = pytest.mark.django_db

FEE_BPS = 250
CASHBACK_BPS, CASHBACK_CAP, CASHBACK_BUDGET, POOL = 1_000, 300, 2_000, 1_500
AMOUNTS = st.integers(min_value=1, max_value=4_000)


def _system_balance(code: str) -> int:
    return system_account(code).balance


class MoneyMachine(RuleBasedStateMachine):
    customers = Bundle("customers")
    payments = Bundle("payments")
    withdrawals = Bundle("withdrawals")

    @initialize()
    def open_shop(self):
        self.client = APIClient()
        self.balance: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.auth: dict[str, dict] = {}
        self.bank_account: dict[str, str] = {}
        self.payment: dict[str, dict] = {}
        self.withdrawal: dict[str, dict] = {}
        merchant_user, merchant = register_user(role="merchant", business_name="Model Shop")
        merchant_fee_set(merchant=merchant, fee_bps=FEE_BPS)
        self.merchant = merchant.handle
        self.balance[self.merchant] = 0
        self.held[self.merchant] = 0
        self.auth[self.merchant] = auth_header(merchant_user)
        staff = register_user()[0]
        now = timezone.now()
        campaign_create(
            actor=staff,
            name="Model cashback",
            bps=CASHBACK_BPS,
            cap_per_payment=CASHBACK_CAP,
            budget=CASHBACK_BUDGET,
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(days=1),
            merchant=self.merchant,
        )
        self.budget_left = CASHBACK_BUDGET
        with atomic():
            transaction_post(
                command=PostingCommand(
                    type="adjustment",
                    legs=(Leg(system_account("adjustments").id, -POOL), Leg(system_account("cashback_pool").id, POOL)),
                )
            )
        self.pool = _system_balance("cashback_pool")
        self.fees = _system_balance("fees")

    @rule(target=customers)
    def register(self):
        user, wallet = register_user()
        self.balance[wallet.handle] = 0
        self.held[wallet.handle] = 0
        self.auth[wallet.handle] = auth_header(user)
        return wallet.handle

    @rule(customer=customers, amount=st.integers(1_000, 20_000), deliveries=st.integers(1, 3))
    def top_up(self, customer, amount, deliveries):
        response = self._post(customer, "/api/v1/wallet/add-money", {"amount": amount})
        assert response.status_code == 201, response.json()
        event_id = f"evt_{uuid.uuid4().hex}"
        for _ in range(deliveries):
            answer = _webhook(self.client, payment_id=response.json()["payment_id"], amount=amount, event_id=event_id)
            assert answer.status_code == 200, answer.json()
        self.balance[customer] += amount

    def _available(self, handle: str) -> int:
        return self.balance[handle] - self.held[handle]

    @rule(target=payments, customer=customers, amount=AMOUNTS, retries=st.integers(0, 1))
    def pay(self, customer, amount, retries):
        key = uuid.uuid4().hex
        body = {"merchant": self.merchant, "amount": amount, "pin": "1234"}
        response = self._post(customer, "/api/v1/wallet/pay", body, key=key)
        for _ in range(retries):
            again = self._post(customer, "/api/v1/wallet/pay", body, key=key)
            assert (again.status_code, again.json()) == (response.status_code, response.json())
        if amount > self._available(customer):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return None
        assert response.status_code == 201, response.json()
        answer = response.json()
        fee = amount * FEE_BPS // 10_000
        assert answer["fee"] == fee
        earned = min(amount * CASHBACK_BPS // 10_000, CASHBACK_CAP, self.budget_left)
        cashback = earned if 0 < earned <= self.pool else 0
        assert answer.get("cashback", {}).get("amount", 0) == cashback
        self.balance[customer] += cashback - amount
        self.balance[self.merchant] += amount - fee
        self.fees += fee
        self.pool -= cashback
        self.budget_left -= cashback
        transaction_id = answer["transaction"]["id"]
        self.payment[transaction_id] = {
            "customer": customer,
            "amount": amount,
            "fee": fee,
            "refunded": 0,
            "fee_back": 0,
            "cashback": cashback,
            "cashback_back": 0,
        }
        assert answer["balance"] == self.balance[customer]
        return transaction_id

    @rule(payment=payments, amount=st.one_of(st.none(), AMOUNTS), retries=st.integers(0, 1))
    def refund(self, payment, amount, retries):
        if payment is None:
            return
        p = self.payment[payment]
        key = uuid.uuid4().hex
        body = {} if amount is None else {"amount": amount}
        url = f"/api/v1/merchant/payments/{payment}/refund"
        response = self._post(self.merchant, url, body, key=key)
        for _ in range(retries):
            again = self._post(self.merchant, url, body, key=key)
            assert (again.status_code, again.json()) == (response.status_code, response.json())
        left = p["amount"] - p["refunded"]
        wanted = left if amount is None else amount
        refunded_after = p["refunded"] + wanted
        fee_back_after = p["fee"] if refunded_after >= p["amount"] else p["fee"] * refunded_after // p["amount"]
        fee_part = fee_back_after - p["fee_back"]
        if wanted == 0 or refunded_after > p["amount"]:
            assert response.status_code == 422, response.json()
            assert response.json()["code"] in ("refund_exceeds_payment", "validation_failed")
            return
        if wanted - fee_part > self._available(self.merchant):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return
        assert response.status_code == 201, response.json()
        customer = p["customer"]
        self.balance[self.merchant] -= wanted - fee_part
        self.fees -= fee_part
        self.balance[customer] += wanted
        target = p["cashback"] if refunded_after >= p["amount"] else p["cashback"] * refunded_after // p["amount"]
        reverse = min(max(0, target - p["cashback_back"]), self._available(customer))
        self.balance[customer] -= reverse
        self.pool += reverse
        p.update(refunded=refunded_after, fee_back=fee_back_after, cashback_back=p["cashback_back"] + reverse)

    @rule(target=withdrawals, customer=customers, amount=AMOUNTS)
    def withdraw(self, customer, amount):
        if customer not in self.bank_account:
            account = self._post(
                customer,
                "/api/v1/wallet/bank-accounts",
                {"account_number": "123456789012", "ifsc": "HDFC0001234", "holder_name": "Model Customer"},
                key=None,
            )
            assert account.status_code == 201, account.json()
            self.bank_account[customer] = account.json()["id"]
        response = self._post(
            customer,
            "/api/v1/wallet/withdraw",
            {"amount": amount, "pin": "1234", "bank_account": self.bank_account[customer]},
        )
        if amount > self._available(customer):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return None
        assert response.status_code == 202, response.json()
        self.held[customer] += amount
        withdrawal_id = response.json()["withdrawal_id"]
        self.withdrawal[withdrawal_id] = {"customer": customer, "amount": amount, "settled": None}
        return withdrawal_id

    @rule(
        withdrawal=withdrawals,
        succeeded=st.booleans(),
        deliveries=st.integers(1, 3),
        contradict=st.booleans(),
    )
    def bank_callback(self, withdrawal, succeeded, deliveries, contradict):
        if withdrawal is None:
            return
        w = self.withdrawal[withdrawal]
        event_id = f"bank_{uuid.uuid4().hex}"
        for _ in range(deliveries):
            answer = self._bank_event(event_id, withdrawal, w["amount"], succeeded)
            assert answer.status_code == 200, answer.json()
        if w["settled"] is None:
            w["settled"] = succeeded
            self.held[w["customer"]] -= w["amount"]
            if succeeded:
                self.balance[w["customer"]] -= w["amount"]
        if contradict:
            # The bank changes its mind: flagged, nothing moves.
            answer = self._bank_event(f"bank_{uuid.uuid4().hex}", withdrawal, w["amount"], not w["settled"])
            assert (answer.status_code, answer.json()["result"]) == (200, "flagged")

    def _bank_event(self, event_id: str, withdrawal: str, amount: int, succeeded: bool):
        body = json.dumps(
            {
                "id": event_id,
                "type": EVENT_SUCCEEDED if succeeded else EVENT_FAILED,
                "data": {"reference": withdrawal, "amount": amount, "currency": "INR"},
            }
        ).encode()
        signature = signature_header(secrets=settings.WALLET["BANK_WEBHOOK_SECRET"], body=body)
        return self.client.generic(
            "POST", "/api/v1/webhooks/bank", body, content_type="application/json", HTTP_BANK_SIGNATURE=signature
        )

    def _post(self, handle: str, url: str, body: dict, key: str | None = "new"):
        headers = dict(self.auth[handle])
        if key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex if key == "new" else key
        return self.client.post(url, body, format="json", **headers)

    @invariant()
    def wallets_match_the_model(self):
        rows = Wallet.objects.filter(handle__in=self.balance).values_list(
            "handle", "account__balance", "account__held_balance"
        )
        assert {h: (b, held) for h, b, held in rows} == {h: (self.balance[h], self.held[h]) for h in self.balance}

    @invariant()
    def system_accounts_match_the_model(self):
        assert _system_balance("fees") == self.fees
        assert _system_balance("cashback_pool") == self.pool
        assert Account.objects.get(code="cashback_pool").balance >= 0

    @invariant()
    def ledger_is_consistent(self):
        assert_ledger_consistent()


def test_random_money_flows_keep_every_balance_and_invariant():
    run_state_machine_as_test(
        MoneyMachine,
        settings=hypothesis_settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
